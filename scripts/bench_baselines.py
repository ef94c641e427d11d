"""What the benchmark compares rnnserve with: ONNX Runtime alone, in the bench process, and the baseline
servers that `python scripts/bench.py --serve KIND --port N` runs (an empty FastAPI endpoint, one ONNX
Runtime call per request, LitServe)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response  # module-level: FastAPI resolves endpoint annotations here

REPO = Path(__file__).resolve().parent.parent
ORT_BATCHES, ORT_FORECAST_BATCHES = (1, 8, 64, 256), (1, 64)
BASELINE_KINDS = ("floor", "one-call", "litserve")


def newest_model(name: str) -> Path:
    versions = [p for p in (REPO / "models" / name).iterdir() if p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name)) / "model.onnx"


def ort_session(path: Path) -> Any:
    """An ONNX Runtime CPU session whose idle threads sleep instead of spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runs_per_second(session: Any, feeds: dict[str, np.ndarray], seconds: float) -> float:
    for _ in range(3):
        session.run(None, feeds)
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        session.run(None, feeds)
        runs += 1
    return runs / elapsed


def ort_alone(seconds: float = 1.0) -> list[dict[str, Any]]:
    """Inputs per second of ONNX Runtime itself, in this process, at a few batch sizes."""
    rng, rows = np.random.default_rng(0), []
    digits, forecaster = ort_session(newest_model("digit_lstm")), ort_session(newest_model("sine_gru"))
    for batch in ORT_BATCHES:
        pixels = rng.integers(0, 256, size=(batch, 28, 28)).astype(np.float32)
        rate = runs_per_second(digits, {"pixels": pixels}, seconds)
        rows.append({"model": "digit_lstm", "batch": batch, "inputs_per_s": rate * batch})
    for batch in ORT_FORECAST_BATCHES:
        series = rng.normal(size=(batch, 256)).astype(np.float32)
        rate = runs_per_second(forecaster, {"series": series, "mask": np.ones_like(series)}, seconds)
        rows.append({"model": "sine_gru", "batch": batch, "inputs_per_s": rate * batch})
    return rows


def digit_answer(probabilities: np.ndarray) -> dict[str, Any]:
    return {
        "digit": int(probabilities.argmax()),
        "probabilities": probabilities.astype(float).round(6).tolist(),
    }


def floor_app() -> FastAPI:
    """The HTTP floor: an endpoint that reads the body and answers a small JSON, nothing else."""
    app = FastAPI()

    @app.post("/predict/digit")
    async def predict(request: Request) -> Response:
        await request.body()
        return Response(b'{"digit":1}', media_type="application/json")

    return app


def one_call_app() -> FastAPI:
    """One session.run per request, on the event loop, without batching."""
    import orjson

    app, session = FastAPI(), ort_session(newest_model("digit_lstm"))

    @app.post("/predict/digit")
    async def predict(request: Request) -> Response:
        pixels = np.asarray(orjson.loads(await request.body())["pixels"], dtype=np.float32)
        (probabilities,) = session.run(["probabilities"], {"pixels": pixels.reshape(1, 28, 28)})
        return Response(orjson.dumps(digit_answer(probabilities[0])), media_type="application/json")

    return app


def litserve_api(model: str) -> Any:
    """A LitServe API on the same ONNX model, batching up to 64 inputs or 5 ms.

    LitServe pickles the API into its spawned worker, where a class local to this function could not
    be found by name: `__reduce__` rebuilds it through this (module-level) function instead. LitServe
    reads the annotations of `decode_request` and `encode_response` as the request and response
    schema, so those two stay unannotated."""
    import litserve as ls

    class DigitAPI(ls.LitAPI):
        def __reduce__(self) -> tuple[Any, ...]:
            return litserve_api, (model,), self.__dict__.copy()

        def setup(self, device: str) -> None:
            self.session = ort_session(Path(model))

        def decode_request(self, request):
            return np.asarray(request["pixels"], dtype=np.float32).reshape(28, 28)

        def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
            return np.stack(inputs)

        def predict(self, x: np.ndarray) -> np.ndarray:
            return self.session.run(["probabilities"], {"pixels": x})[0]

        def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
            return list(output)

        def encode_response(self, output):
            return digit_answer(output)

    return DigitAPI(max_batch_size=64, batch_timeout=0.005, api_path="/predict/digit")


def serve(kind: str, port: int) -> None:
    """The `--serve` sub-mode: a baseline on the service's stack (uvicorn, httptools, uvloop)."""
    if kind == "litserve":
        import litserve as ls

        server = ls.LitServer(litserve_api(str(newest_model("digit_lstm"))), accelerator="cpu")
        server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")
        return
    import uvicorn

    app = floor_app() if kind == "floor" else one_call_app()
    stack: dict[str, Any] = {
        "http": "httptools",
        "loop": "uvloop",
        "access_log": False,
        "log_level": "warning",
    }
    uvicorn.run(app, host="127.0.0.1", port=port, **stack)
