"""Which precision answers (RNNSERVE_PRECISION), on the real app over ASGI: the committed int8 graphs on
this CPU host by default, the float ones when asked; every answer, GET /models, V2 and the metrics say
which, and the numbers are those of the graph named."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnxruntime as ort
import pytest

if TYPE_CHECKING:
    from conftest import ServeApp

DIGITS = {"digit_lstm": "5", "digit_gru": "3", "digit_rnn": "4"}


def probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"pixels": images.astype(np.float32)})[0]


def served(models: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    return {m["name"]: (m["precision"], m["precision_reason"]) for m in models}


AUTO = "auto: float, since the int8 variant takes "  # more CPU for a lone image than the float graph


@pytest.mark.parametrize(
    ("setting", "digits"),
    [
        (
            "auto",
            {
                "digit_lstm": ("int8", "auto on the CPU: int8, "),
                "digit_gru": ("fp32", AUTO),
                "digit_rnn": ("int8", "auto on the CPU: int8, "),
            },
        ),
        ("fp32", dict.fromkeys(DIGITS, ("fp32", "RNNSERVE_PRECISION=fp32"))),
        ("int8", dict.fromkeys(DIGITS, ("int8", "RNNSERVE_PRECISION=int8"))),
    ],
)
async def test_each_answer_comes_from_the_graph_its_precision_names(
    serve: ServeApp,
    models_dir: Path,
    mnist_test_set: tuple[np.ndarray, np.ndarray],
    setting: str,
    digits: dict[str, tuple[str, str]],
) -> None:
    images = mnist_test_set[0][:5]
    # One ONNX Runtime thread per model call, as the variants were measured with (else auto keeps float).
    async with serve(precision=setting, threads=1) as (_, client):
        models = served((await client.get("/models")).json()["models"])
        for name, (precision, reason) in digits.items():
            assert models[name][0] == precision and models[name][1].startswith(reason), models[name]
        assert models["series_gru"] == models["sine_gru"] == ("fp32", "the version has no int8 variant")

        for name, version in DIGITS.items():
            answer = await client.post(
                f"/predict/digit?model={name}",
                content=images.tobytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert answer.status_code == 200, answer.text
            predictions = answer.json()["predictions"]
            precision = digits[name][0]
            assert {(p["version"], p["precision"]) for p in predictions} == {(version, precision)}
            graph = models_dir / name / version / ("model.int8.onnx" if precision == "int8" else "model.onnx")
            np.testing.assert_allclose(
                [p["probabilities"] for p in predictions], probabilities(graph, images), rtol=0, atol=1e-6
            )
        forecast = (await client.post("/forecast", json={"series": list(range(20)), "horizon": 2})).json()
        assert (forecast["model"], forecast["precision"]) == ("series_gru", "fp32")


async def test_with_more_threads_auto_keeps_the_float_graphs(serve: ServeApp) -> None:
    async with serve(threads=2) as (_, client):
        models = served((await client.get("/models")).json()["models"])
    for name in DIGITS:
        assert models[name][0] == "fp32"
        assert "measured with 1 ONNX Runtime thread(s) and each model call here gets 2" in models[name][1]


async def test_v2_and_the_metrics_name_the_precision(
    serve: ServeApp, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    image = mnist_test_set[0][0].astype(np.float32)
    body = {
        "inputs": [
            {"name": "pixels", "datatype": "FP32", "shape": [1, 28, 28], "data": image.ravel().tolist()}
        ]
    }
    async with serve(threads=1) as (_, client):
        answer = (await client.post("/v2/models/digit_rnn/infer", json=body)).json()
        assert (answer["model_version"], answer["parameters"]) == ("4", {"precision": "int8"})
        config = (await client.get("/v2/models/digit_rnn/config")).json()
        assert config["parameters"] == {"precision": {"string_value": "int8"}}
        forecast = await client.post(
            "/v2/models/sine_gru/infer",
            json={
                "inputs": [{"name": "series", "datatype": "FP32", "shape": [1, 20], "data": list(range(20))}]
            },
        )
        assert forecast.json()["parameters"] == {"precision": "fp32"}, forecast.text
        metrics = (await client.get("/metrics")).text
    assert 'model="digit_rnn",precision="int8",provider="CPUExecutionProvider",version="4"} 1.0' in metrics
    assert 'model="digit_lstm",precision="int8",provider="CPUExecutionProvider",version="5"} 1.0' in metrics
    assert 'model="sine_gru",precision="fp32",provider="CPUExecutionProvider",version="2"} 1.0' in metrics


@pytest.mark.parametrize("name", list(DIGITS))
async def test_an_int8_answer_is_the_same_alone_and_in_a_batch(
    serve: ServeApp, name: str, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    """Eight requests answered in one model call get, to the bit, what each got alone: the int8 graphs
    quantize at fixed scales, never by what else is in the batch."""
    images = [mnist_test_set[0][i].tolist() for i in range(8)]
    body = [{"pixels": image, "model": name} for image in images]
    async with serve(precision="int8", threads=1) as (_, client):
        alone = [(await client.post("/predict/digit", json=b)).json() for b in body]
    one_call: dict[str, Any] = {"precision": "int8", "threads": 1, "max_batch_size": 8, "max_delay_ms": 3.6e6}
    async with serve(**one_call) as (_, client):
        together = await asyncio.gather(*(client.post("/predict/digit", json=b) for b in body))
        calls = (await client.get("/metrics")).text
    assert f'rnnserve_batch_size_count{{model="{name}"}} 1.0' in calls  # one model call for all eight
    for single, batched in zip(alone, together, strict=True):
        assert batched.json()["precision"] == single["precision"] == "int8"
        assert batched.json()["probabilities"] == single["probabilities"]
