"""What the benchmark compares rnnserve with: ONNX Runtime alone, in the bench process (the float graphs,
and digit_lstm's int8 variant; on the CPU or with the CUDA provider), and the baseline servers that
`python scripts/bench.py --serve KIND --port N` runs (an empty FastAPI endpoint, one ONNX Runtime call
per request, LitServe)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response  # module-level: FastAPI resolves endpoint annotations here

REPO = Path(__file__).resolve().parent.parent
ORT_BATCHES, ORT_FORECAST_BATCHES = (1, 8, 64, 256), (1, 64)
BASELINE_KINDS = ("floor", "one-call", "litserve")
FORECASTER = "series_gru"  # the service's default forecaster


def newest_version(name: str) -> Path:
    versions = [p for p in (REPO / "models" / name).iterdir() if p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name))


def newest_model(name: str) -> Path:
    return newest_version(name) / "model.onnx"


def precision_graphs(version: Path) -> dict[str, Path]:
    """A model version's ONNX graphs by precision: "fp32", then "int8" when its metadata.json has the
    variant (`variants.int8`)."""
    variant = json.loads((version / "metadata.json").read_text()).get("variants", {}).get("int8")
    graphs = {"fp32": version / "model.onnx"}
    if isinstance(variant, dict):
        graphs["int8"] = version / variant["onnx_file"]
    return graphs


def ort_session(path: Path, device: str = "cpu", threads: int | None = None) -> Any:
    """An ONNX Runtime session on the CPU, or with the CUDA provider first for `device` "cuda", with the
    service's session options (idle CPU threads sleep instead of spinning; `threads` intra-op threads,
    None: one per core)."""
    import onnxruntime as ort

    from service.runtimes.onnx import session_options

    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError(
                f"ONNX Runtime {ort.__version__} here has no CUDAExecutionProvider (only "
                f"{', '.join(available)}): install onnxruntime-gpu in place of onnxruntime "
                "(pip install -e '.[gpu]'), or add --dry-run to run the GPU mode on the CPU"
            )
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), session_options(threads), providers=providers)


def runs_per_second(session: Any, feeds: dict[str, np.ndarray], seconds: float) -> float:
    return timed_runs(session, feeds, seconds)[0]


def timed_runs(session: Any, feeds: dict[str, np.ndarray], seconds: float) -> tuple[float, float]:
    """Runs per second of `session` on `feeds` for about `seconds`, and this process's CPU seconds per
    run (every thread's: ONNX Runtime's threads sleep rather than spin, so this is the work itself)."""
    for _ in range(3):
        session.run(None, feeds)
    runs, started, cpu = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - started) < seconds:
        session.run(None, feeds)
        runs += 1
    return runs / elapsed, (time.process_time() - cpu) / runs


def ort_alone(
    seconds: float = 1.0, device: str = "cpu", int8: bool = True, threads: tuple[int, ...] = ()
) -> list[dict[str, Any]]:
    """Inputs per second of ONNX Runtime itself, in this process, at a few batch sizes: digit_lstm's
    newest float graph (and, with `int8`, its int8 variant) and the default forecaster's, with ONNX
    Runtime's default threads (one per core); digit_lstm also with each count of intra-op `threads`
    (those of the service's model calls, where they differ). Each row: model, precision, batch, threads,
    inputs_per_s, cpu_us_per_input and the provider that ran it."""
    from service.config import usable_cores

    rng, rows, cores = np.random.default_rng(0), [], usable_cores()
    graphs = precision_graphs(newest_version("digit_lstm"))
    for count in dict.fromkeys((None, *(t for t in threads if t != cores))):
        for precision, path in graphs.items():
            if precision == "int8" and not int8:
                continue
            session = ort_session(path, device, count)
            for batch in ORT_BATCHES:
                pixels = rng.integers(0, 256, size=(batch, 28, 28)).astype(np.float32)
                rate, cpu = timed_runs(session, {"pixels": pixels}, seconds)
                rows.append(ort_row("digit_lstm", precision, batch, count or cores, rate, cpu, session))
    forecaster = ort_session(newest_model(FORECASTER), device)
    for batch in ORT_FORECAST_BATCHES:
        series = rng.normal(size=(batch, 256)).astype(np.float32)
        known = {"series": series, "mask": np.ones_like(series), "season": np.zeros((batch, 1), np.float32)}
        feeds = {i.name: known[i.name] for i in forecaster.get_inputs()}
        rate, cpu = timed_runs(forecaster, feeds, seconds)
        rows.append(ort_row(FORECASTER, "fp32", batch, cores, rate, cpu, forecaster))
    return rows


def one_per_core(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of `ort_alone` with ONNX Runtime's default threads (one per core)."""
    most = max((row["threads"] for row in rows), default=0)
    return [row for row in rows if row["threads"] == most]


def ort_row(
    model: str,
    precision: str,
    batch: int,
    threads: int,
    runs_per_s: float,
    cpu_s_per_run: float,
    session: Any,
) -> dict[str, Any]:
    """One row of `ort_alone`: inputs per second, CPU µs per input, and the provider that ran them."""
    return dict(
        model=model,
        precision=precision,
        batch=batch,
        threads=threads,
        inputs_per_s=runs_per_s * batch,
        cpu_us_per_input=1e6 * cpu_s_per_run / batch,
        provider=session.get_providers()[0],
    )


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
