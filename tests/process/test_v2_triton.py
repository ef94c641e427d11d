"""The V2 protocol as Triton's own HTTP client (tritonclient, from PyPI) sees it, against a real server on
127.0.0.1: health, metadata, inference in JSON and in binary mode for both models, with the same
numbers as the REST routes, and the protocol's errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from serving import start_service
from tritonclient.utils import InferenceServerException

from service.repository import model_names

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def newest_version(name: str) -> str:
    return max((p.name for p in (MODELS_DIR / name).iterdir() if p.name.isdigit()), key=int)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, process = start_service(MODELS_DIR, tmp_path_factory.mktemp("v2") / "server.log")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.removeprefix("http://"), network_timeout=60) as made:
        yield made


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool) -> triton.InferInput:
    made = triton.InferInput(name, list(array.shape), datatype)
    made.set_data_from_numpy(array, binary_data=binary)
    return made


def test_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "rnnserve"
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    digit = client.get_model_metadata("digit_lstm")
    assert digit["platform"] == "onnx_onnxv1" and digit["versions"] == [newest_version("digit_lstm")]
    assert digit["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 28, 28]}]
    assert [(o["name"], o["shape"]) for o in digit["outputs"]] == [
        ("logits", [-1, 10]),
        ("probabilities", [-1, 10]),
    ]
    series = client.get_model_metadata("series_gru", model_version=newest_version("series_gru"))
    assert [(i["name"], i["datatype"], i["shape"]) for i in series["inputs"]] == [
        ("series", "FP32", [-1, -1]), ("horizon", "INT32", [-1, 1]), ("quantiles", "FP32", [1, -1]),
        ("season_length", "INT32", [-1, 1]),
    ]  # fmt: skip
    assert [o["name"] for o in series["outputs"]] == ["mean", "std", "quantiles"]
    sine = client.get_model_metadata("sine_gru", model_version=newest_version("sine_gru"))
    assert [i["name"] for i in sine["inputs"]] == ["series", "horizon", "quantiles"]  # it takes no season
    for name in ("digit_lstm", "series_gru", "sine_gru"):
        assert client.is_model_ready(name) and client.is_model_ready(name, newest_version(name))
        assert client.get_model_config(name)["max_batch_size"] >= 1
    index = {entry["name"]: entry["state"] for entry in client.get_model_repository_index()}
    assert index == {name: "READY" for name in model_names(MODELS_DIR)}


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_digits_in_both_modes_equal_the_rest_route(
    client: triton.InferenceServerClient,
    server: str,
    mnist_test_set: tuple[np.ndarray, np.ndarray],
    binary: bool,
    datatype: str,
) -> None:
    images, labels = mnist_test_set[0][:16], mnist_test_set[1][:16]
    pixels = images.astype(np.float32 if datatype == "FP32" else np.uint8)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "logits")]
    result = client.infer("digit_lstm", [tensor("pixels", pixels, datatype, binary)], outputs=outputs)
    probabilities, logits = result.as_numpy("probabilities"), result.as_numpy("logits")
    assert probabilities.shape == logits.shape == (16, 10)
    rest = httpx.post(f"{server}/predict/digit", json={"inputs": [{"pixels": i.tolist()} for i in images]})
    expected = np.array([p["probabilities"] for p in rest.json()["predictions"]])
    np.testing.assert_allclose(probabilities, expected, atol=1e-5, rtol=0)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(softmax, probabilities, atol=1e-5, rtol=0)
    assert (probabilities.argmax(axis=1) == labels).mean() >= 0.9


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_forecasts_in_both_modes_equal_the_rest_route(
    client: triton.InferenceServerClient, server: str, binary: bool
) -> None:
    steps = np.arange(300, dtype=np.float64)
    series = np.stack([np.sin(steps / 6) * 3 + 10, np.sin(steps / 20) + steps / 100]).astype(np.float32)
    inputs = [
        tensor("series", series, "FP32", binary),
        tensor("horizon", np.full((2, 1), 24, np.int32), "INT32", binary),
    ]
    result = client.infer(
        "series_gru", inputs, outputs=[triton.InferRequestedOutput(n, binary) for n in ("mean", "std")]
    )
    mean, std = result.as_numpy("mean"), result.as_numpy("std")
    assert mean.shape == std.shape == (2, 24) and (std > 0).all()
    for row in range(2):
        rest = httpx.post(
            f"{server}/forecast", json={"series": series[row].tolist(), "horizon": 24, "levels": [95]}
        )
        answer = rest.json()
        np.testing.assert_allclose(mean[row], answer["forecast"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(
            mean[row] + 1.959964 * std[row], answer["intervals"]["95"]["upper"], atol=1e-4
        )


def test_a_season_length_hint_goes_through_tritonclient(
    client: triton.InferenceServerClient, server: str
) -> None:
    steps = np.arange(120, dtype=np.float32)
    series = (10 + np.sin(2 * np.pi * steps / 12) + steps / 50)[None, :]
    inputs = [
        tensor("series", series, "FP32", True),
        tensor("horizon", np.array([[12]], np.int32), "INT32", True),
        tensor("season_length", np.array([[12]], np.int32), "INT32", True),
    ]
    mean = client.infer("series_gru", inputs).as_numpy("mean")
    body = {"series": series[0].tolist(), "horizon": 12, "season_length": 12}
    rest = httpx.post(f"{server}/forecast", json=body).json()
    np.testing.assert_allclose(mean[0], rest["forecast"], atol=1e-5, rtol=0)


def test_a_forecast_without_horizon_covers_the_models_longest(client: triton.InferenceServerClient) -> None:
    config = json.loads(
        (MODELS_DIR / "series_gru" / newest_version("series_gru") / "metadata.json").read_text()
    )
    series = np.sin(np.arange(64, dtype=np.float32) / 4)[None, :]
    result = client.infer("series_gru", [tensor("series", series, "FP32", True)])  # every output, binary
    assert result.as_numpy("mean").shape == (1, config["config"]["max_horizon"])


def test_errors_carry_the_protocols_status_and_message(client: triton.InferenceServerClient) -> None:
    pixels = np.full((1, 28, 28), 255, np.float32)
    pixels[0, :, :10] = 0
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("no_such_model", [tensor("pixels", pixels, "FP32", True)])
    assert unknown.value.status() == "404" and "digit_lstm, series_gru" in unknown.value.message()
    with pytest.raises(InferenceServerException) as version:
        client.infer("digit_lstm", [tensor("pixels", pixels, "FP32", True)], model_version="999")
    assert version.value.status() == "404" and "version" in version.value.message()
    with pytest.raises(InferenceServerException) as shape:
        client.infer("digit_lstm", [tensor("pixels", pixels.reshape(1, 784), "FP32", False)])
    assert shape.value.status() == "400" and "[n, 28, 28]" in shape.value.message()
    with pytest.raises(InferenceServerException) as short:
        client.infer("sine_gru", [tensor("series", np.ones((1, 3), np.float32), "FP32", True)])
    assert short.value.status() == "400" and "series[0]: has 3 values" in short.value.message()
    with pytest.raises(InferenceServerException) as datatype:
        client.infer("digit_lstm", [tensor("pixels", pixels.astype(np.float64), "FP64", True)])
    assert datatype.value.status() == "400" and "FP32 or UINT8" in datatype.value.message()
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no_such_model")
    assert not client.is_model_ready("no_such_model")
