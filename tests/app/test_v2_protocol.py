"""The V2 protocol's codecs alone, and its routes on the real app over ASGI: the same batchers as REST,
overload and keys in the protocol's error shape, versioned paths, compressed bodies."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pytest
from fastapi import FastAPI

from service.errors import InvalidInput, PayloadTooLarge
from service.repository import newest_version
from service.v2.tensors import Tensor, decompress, encode_infer_response, parse_infer_request

if TYPE_CHECKING:
    from conftest import ServeApp

FOREVER_MS = 3_600_000.0


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": list(inputs), **extra})


def digit_tensor(images: np.ndarray, datatype: str = "FP32") -> dict[str, Any]:
    return {
        "name": "pixels",
        "shape": list(images.shape),
        "datatype": datatype,
        "data": images.ravel().tolist(),
    }


# ---- codecs -------------------------------------------------------------------------------------------


def test_flat_and_nested_data_read_the_same() -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    flat = parse_infer_request(
        body({"name": "x", "shape": [2, 3], "datatype": "FP32", "data": values.ravel().tolist()}), ""
    )
    nested = parse_infer_request(
        body({"name": "x", "shape": [2, 3], "datatype": "FP32", "data": values.tolist()}), ""
    )
    for request in (flat, nested):
        np.testing.assert_array_equal(request.inputs["x"].array, values)
        assert request.inputs["x"].array.dtype == np.float32


def test_binary_data_follows_the_json_header() -> None:
    first, second = np.arange(4, dtype=np.int32), np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)
    header = body(
        {"name": "a", "shape": [4], "datatype": "INT32", "parameters": {"binary_data_size": first.nbytes}},
        {"name": "b", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": second.nbytes}},
        parameters={"binary_data_output": True, "timeout": 250_000},
        id="r1",
    )
    request = parse_infer_request(header + first.tobytes() + second.tobytes(), str(len(header)))
    np.testing.assert_array_equal(request.inputs["a"].array, first)
    np.testing.assert_array_equal(request.inputs["b"].array, second)
    assert request.binary_output and request.timeout_s == 0.25 and request.id == "r1"


@pytest.mark.parametrize(
    ("raw", "header_length", "message"),
    [
        (b"{", "", "not valid JSON"),
        (body(), "", "non-empty list `inputs`"),
        (body({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3]]}), "", "ragged"),
        (body({"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}), "", "holds 2 values"),
        (body({"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 300]}), "", "-128..127"),
        (body({"name": "x", "shape": [2], "datatype": "INT32", "data": [1.5, 2]}), "", "integers only"),
        (body({"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}), "", "numbers only"),
        (body({"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}), "", "not supported"),
        (body({"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}), "", "non-negative"),
        (
            body({"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}) + b"\0" * 4,
            "9999",
            "Content-Length",
        ),
    ],
)
def test_a_bad_request_is_named(raw: bytes, header_length: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_infer_request(raw, header_length)


def test_binary_sizes_must_add_up() -> None:
    header = body({"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}})
    with pytest.raises(InvalidInput, match="binary_data_size is 8"):
        parse_infer_request(header + b"\0" * 4, str(len(header)))
    with pytest.raises(InvalidInput, match="no input claims"):
        parse_infer_request(header + b"\0" * 12, str(len(header)))


def test_responses_in_json_and_in_binary() -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    text, length = encode_infer_response("m", "1", "r", [(Tensor("y", "FP32", values), False)])
    assert length is None
    assert orjson.loads(text)["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [2, 3], "data": [0, 1, 2, 3, 4, 5]}
    ]
    raw, length = encode_infer_response("m", "1", None, [(Tensor("y", "FP32", values), True)])
    assert length is not None and orjson.loads(raw[:length])["outputs"][0]["parameters"] == {
        "binary_data_size": 24
    }
    np.testing.assert_array_equal(np.frombuffer(raw[length:], "<f4").reshape(2, 3), values)


def test_compressed_bodies_are_inflated_within_the_limit() -> None:
    raw = b"x" * 10_000
    assert decompress(gzip.compress(raw), "gzip", 20_000) == raw
    assert decompress(zlib.compress(raw), "deflate", 20_000) == raw
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(raw), "gzip", 1_000)
    with pytest.raises(InvalidInput, match="could not be decompressed"):
        decompress(b"not gzip", "gzip", 1_000)


# ---- routes on the real app -------------------------------------------------------------------------


async def test_v2_inputs_share_the_batch_with_rest_inputs(
    serve: ServeApp, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images = mnist_test_set[0][:4].astype(np.float32)
    async with serve(max_batch_size=4, max_delay_ms=FOREVER_MS) as (app, client):
        v2, rest = await asyncio.gather(
            client.post("/v2/models/digit_lstm/infer", content=body(digit_tensor(images[:3]))),
            client.post("/predict/digit", json={"pixels": images[3].tolist()}),
        )
        assert v2.status_code == rest.status_code == 200, v2.text
        assert metric(app, "rnnserve_batch_size_count", model="digit_lstm") == 1
        assert metric(app, "rnnserve_batch_size_sum", model="digit_lstm") == 4
    outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in v2.json()["outputs"]}
    assert outputs["probabilities"].shape == (3, 10)
    assert rest.json()["digit"] == mnist_test_set[1][3]


async def test_overload_and_missing_keys_answer_in_the_protocols_shape(
    serve: ServeApp, models_dir: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images = mnist_test_set[0][:1].astype(np.float32)
    async with serve(
        max_batch_size=8, max_delay_ms=FOREVER_MS, max_queue_size=1, max_inputs_per_request=1
    ) as (app, client):
        waiting = asyncio.ensure_future(
            client.post("/v2/models/digit_lstm/infer", content=body(digit_tensor(images)))
        )
        depth = {"model": "digit_lstm"}
        for _ in range(3000):  # until the first request waits in the queue (at most 30 s)
            if app.state.metrics.registry.get_sample_value("rnnserve_queue_depth", depth) == 1:
                break
            await asyncio.sleep(0.01)
        refused = await client.post(
            f"/v2/models/digit_lstm/versions/{newest_version(models_dir, 'digit_lstm').name}/infer",
            content=body(digit_tensor(images)),
        )
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        assert set(refused.json()) == {"error"}
        waiting.cancel()
    async with serve(api_keys="k1") as (_, client):
        denied = await client.post("/v2/models/digit_lstm/infer", content=body(digit_tensor(images)))
        assert denied.status_code == 401 and "API key" in denied.json()["error"]
        assert (await client.get("/v2/health/ready")).status_code == 200  # probes need no key
        allowed = await client.post(
            "/v2/models/digit_lstm/infer", content=body(digit_tensor(images)), headers={"X-API-Key": "k1"}
        )
        assert allowed.status_code == 200


async def test_gzip_requests_uint8_pixels_and_wrong_methods(
    api_client: Any, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images = mnist_test_set[0][:2]
    request = gzip.compress(body(digit_tensor(images, "UINT8"), outputs=[{"name": "probabilities"}]))
    answer = await api_client.post(
        "/v2/models/digit_lstm/infer", content=request, headers={"Content-Encoding": "gzip"}
    )
    assert answer.status_code == 200, answer.text
    assert [o["name"] for o in answer.json()["outputs"]] == ["probabilities"]
    wrong = await api_client.get("/v2/models/digit_lstm/infer")
    assert wrong.status_code == 405 and "POST" in wrong.json()["error"]
    unknown_output = await api_client.post(
        "/v2/models/digit_lstm/infer",
        content=body(digit_tensor(images, "UINT8"), outputs=[{"name": "digit"}]),
    )
    assert unknown_output.status_code == 400 and "logits, probabilities" in unknown_output.json()["error"]
    blank = await api_client.post(
        "/v2/models/digit_lstm/infer", content=body(digit_tensor(np.zeros((1, 28, 28))))
    )
    assert blank.status_code == 400 and "pixels[0]: the image holds no digit" in blank.json()["error"]
    horizons = await api_client.post(
        "/v2/models/sine_gru/infer",
        content=body(
            {"name": "series", "shape": [2, 20], "datatype": "FP32", "data": np.ones((2, 20)).tolist()},
            {"name": "horizon", "shape": [2, 1], "datatype": "INT32", "data": [[3], [4]]},
        ),
    )
    assert horizons.status_code == 400 and "same for every row" in horizons.json()["error"]


def metric(app: FastAPI, name: str, **labels: str) -> float:
    value = app.state.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)
