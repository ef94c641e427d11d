"""Every error path of the API: bad input is a 422 (or 413) that says what to fix, never a 500;
overload is 429, a missing model or a shutdown 503."""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import onnxruntime
import pytest
from PIL import Image

from service.repository import newest_version

if TYPE_CHECKING:
    from conftest import ServeApp

FOREVER_MS = 3_600_000.0
ZEROS = [[0] * 28 for _ in range(28)]
BAR = [[0] * 12 + [200] * 4 + [0] * 12 for _ in range(28)]  # a "1"


def image_file(array: np.ndarray, format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format)
    return buffer.getvalue()


BAD_DIGIT_BODIES: list[tuple[str, Any, str]] = [
    ("empty body", b"", "not valid JSON"),
    ("not JSON", b"pixels=1", "not valid JSON"),
    ("a list", [1, 2, 3], "must be a JSON object"),
    ("no input", {}, 'exactly one of "pixels" or "image" or "inputs"'),
    ("two inputs", {"pixels": ZEROS, "image": "AAAA"}, "got pixels and image"),
    ("misspelt field", {"pixel": ZEROS}, "unknown field(s) 'pixel'"),
    ("27 rows", {"pixels": ZEROS[:27]}, "got an array of shape (27, 28)"),
    ("ragged rows", {"pixels": [*ZEROS[:27], [0] * 27]}, "equally long rows"),
    ("783 values", {"pixels": [0] * 783}, "got 783 numbers"),
    ("text values", {"pixels": [["x"] * 28] * 28}, "numbers only"),
    ("null values", {"pixels": [None] * 784}, "numbers only"),
    ("not a list", {"pixels": "0" * 784}, "must be a JSON list of numbers"),
    ("NaN", b'{"pixels": [' + b"NaN, " * 783 + b"0]}", "finite numbers"),
    ("Infinity", b'{"pixels": [' + b"0, " * 783 + b"Infinity]}", "finite numbers"),
    ("above 255", {"pixels": [300] * 784}, "must lie in 0–255"),
    ("negative", {"pixels": [-0.5] * 784}, "must lie in 0–255"),
    ("bad base64", {"image": "not base64!"}, "not valid base64"),
    ("not an image", {"image": "aGVsbG8gd29ybGQ="}, "not a PNG, JPEG, BMP or WebP"),
    ("empty image", {"image": ""}, "image: empty"),
    ("image as a number", {"image": 7}, "image: must be a string"),
    ("blank image", {"image": "blank"}, "holds no digit"),
    ("GIF image", {"image": "gif"}, "not a PNG, JPEG, BMP or WebP"),
    ("truncated PNG", {"image": "truncated"}, "could not be decoded"),
    ("empty inputs", {"inputs": []}, "inputs: must not be empty"),
    ("bad entry", {"inputs": [{"pixels": ZEROS}, {"pixels": [1]}]}, "inputs[1].pixels: must be 28 rows"),
    ("bad image entry", {"inputs": [{"pixels": BAR}, {"image": "blank"}]}, "inputs[1].image: holds no"),
    ("too many inputs", {"inputs": [{"pixels": BAR}] * 9}, "at most 8 per request"),
    ("blank canvas", {"pixels": ZEROS}, "pixels: the image holds no digit: every pixel is 0"),
    ("uniform image", {"pixels": [[7] * 28] * 28}, "every pixel is 7"),
    (
        "scaled to 0–1",
        {"pixels": [[0.0] * 12 + [0.8] * 4 + [0.0] * 12] * 28},
        "look scaled to 0–1 (the largest is 0.8)",
    ),
]


def resolve(body: Any) -> Any:
    """Stand-ins for image files that are easier to name than to spell out."""
    import base64

    files = {
        "blank": image_file(np.full((28, 28), 255, np.uint8), "PNG"),
        "gif": image_file(np.zeros((28, 28), np.uint8), "GIF"),
        "truncated": image_file(np.random.default_rng(0).integers(0, 256, (28, 28), np.uint8), "PNG")[:400],
    }
    if isinstance(body, dict):
        return {k: resolve(v) for k, v in body.items()}
    if isinstance(body, list):
        return [resolve(v) for v in body]
    if isinstance(body, str) and body in files:
        return base64.b64encode(files[body]).decode()
    return body


@pytest.fixture
async def strict_client(serve: ServeApp) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(max_inputs_per_request=8) as (_, client):
        yield client


async def post(client: httpx.AsyncClient, path: str, body: Any) -> httpx.Response:
    if isinstance(body, bytes):
        return await client.post(path, content=body, headers={"content-type": "application/json"})
    return await client.post(path, json=body)


@pytest.mark.parametrize(("case", "body", "message"), BAD_DIGIT_BODIES, ids=[c[0] for c in BAD_DIGIT_BODIES])
async def test_a_bad_digit_request_is_a_422_that_says_what_to_fix(
    strict_client: httpx.AsyncClient, case: str, body: Any, message: str
) -> None:
    response = await post(strict_client, "/predict/digit", resolve(body))
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


BAD_FORECAST_BODIES: list[tuple[str, Any, str]] = [
    ("no series", {"horizon": 3}, 'exactly one of "series" or "inputs"'),
    ("no horizon", {"series": [1.0] * 20}, '"horizon" is required'),
    ("15 values", {"series": [1.0] * 15, "horizon": 3}, "has 15 values; series_gru needs 16 to 4096"),
    ("4097 values", {"series": [1.0] * 4097, "horizon": 3}, "has 4097 values"),
    ("empty series", {"series": [], "horizon": 3}, "has 0 values"),
    ("nested series", {"series": [[1.0] * 20], "horizon": 3}, "flat list of numbers"),
    ("text values", {"series": ["1"] * 20, "horizon": 3}, "numbers only"),
    ("NaN", b'{"series": [' + b"1, " * 19 + b'NaN], "horizon": 3}', "finite numbers"),
    ("huge value", {"series": [1e39] * 20, "horizon": 3}, "within ±3.4e+38"),
    ("horizon 0", {"series": [1.0] * 20, "horizon": 0}, "forecasts 1 to 128 steps"),
    ("horizon 129", {"series": [1.0] * 20, "horizon": 129}, "horizon: is 129"),
    ("fractional horizon", {"series": [1.0] * 20, "horizon": 2.5}, "horizon: must be an integer"),
    ("horizon as text", {"series": [1.0] * 20, "horizon": "3"}, "horizon: must be an integer"),
    ("level 100", {"series": [1.0] * 20, "horizon": 3, "levels": [100]}, "strictly between 0 and 100"),
    ("level 0", {"series": [1.0] * 20, "horizon": 3, "levels": [0]}, "strictly between 0 and 100"),
    ("repeated level", {"series": [1.0] * 20, "horizon": 3, "levels": [80, 80.0]}, "must not repeat"),
    ("no levels", {"series": [1.0] * 20, "horizon": 3, "levels": []}, "must list 1 to 10"),
    ("level as a fraction", {"series": [1.0] * 20, "horizon": 3, "levels": [0.95]}, "send 95, not 0.95"),
    (
        "top-level horizon",
        {"inputs": [{"series": [1.0] * 20, "horizon": 1}], "horizon": 2},
        "inside each entry",
    ),
    (
        "bad entry",
        {"inputs": [{"series": [1.0] * 20, "horizon": 1}, {"series": [1.0] * 3, "horizon": 1}]},
        "inputs[1].series: has 3 values",
    ),
    ("entry without horizon", {"inputs": [{"series": [1.0] * 20}]}, "inputs[0].horizon: is required"),
    ("too many inputs", {"inputs": [{"series": [1.0] * 20, "horizon": 1}] * 9}, "at most 8 per request"),
    ("overflowing series", {"series": [3e38, -3e38] * 10, "horizon": 3}, "too large for the model"),
]


@pytest.mark.parametrize(
    ("case", "body", "message"), BAD_FORECAST_BODIES, ids=[c[0] for c in BAD_FORECAST_BODIES]
)
async def test_a_bad_forecast_request_is_a_422_that_says_what_to_fix(
    strict_client: httpx.AsyncClient, case: str, body: Any, message: str
) -> None:
    response = await post(strict_client, "/forecast", body)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


async def test_a_body_with_several_mistakes_lists_every_one(strict_client: httpx.AsyncClient) -> None:
    digits = {"inputs": [{"pixels": ZEROS}, {"pixels": BAR}, {"pixels": [[0.0] * 27 + [0.5]] * 28}]}
    forecasts = {"inputs": [{"series": [1.0] * 3, "horizon": 500}, {"series": [1.0] * 20, "horizon": 0}]}
    octets = np.zeros((3, 784), np.uint8)
    octets[1, :10] = 255
    responses = [
        await strict_client.post("/predict/digit", json=digits),
        await strict_client.post("/forecast", json=forecasts),
        await strict_client.post(
            "/predict/digit", content=octets.tobytes(), headers={"content-type": "application/octet-stream"}
        ),
    ]
    assert [r.status_code for r in responses] == [422] * 3
    locations = [[e["loc"] for e in r.json()["errors"]] for r in responses]
    assert locations == [
        ["inputs[0].pixels", "inputs[2].pixels"],
        ["inputs[0].series", "inputs[0].horizon", "inputs[1].horizon"],
        ["images[0]", "images[2]"],
    ]
    assert "holds no digit" in responses[2].json()["errors"][0]["msg"]


async def test_pydantic_errors_are_listed_one_by_one(strict_client: httpx.AsyncClient) -> None:
    body = {"inputs": [{"pixels": [1]}, {"image": 3}, {"pixels": BAR}]}
    response = await strict_client.post("/predict/digit", json=body)
    assert response.status_code == 422
    assert [e["loc"] for e in response.json()["errors"]] == ["inputs[0].pixels", "inputs[1].image"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"picture": ("d.png", b"x", "image/png")}, "no file in field `file`"),
        ({"file": ("d.txt", b"hello", "text/plain")}, "not a PNG, JPEG, BMP or WebP"),
        ({"file": ("d.png", b"", "image/png")}, "image: empty"),
    ],
)
async def test_a_bad_upload_is_a_422(
    strict_client: httpx.AsyncClient, files: dict[str, tuple[str, bytes, str]], message: str
) -> None:
    response = await strict_client.post("/predict/digit", files=files)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


async def test_two_uploaded_files_are_a_422(strict_client: httpx.AsyncClient) -> None:
    digit = image_file(np.eye(28, dtype=np.uint8) * 255, "PNG")
    response = await strict_client.post(
        "/predict/digit",
        files=[("file", ("a.png", digit, "image/png")), ("file", ("b.png", digit, "image/png"))],
    )
    assert response.status_code == 422
    assert "upload one file in field `file`" in response.json()["detail"]


async def test_a_malformed_multipart_body_is_a_422(strict_client: httpx.AsyncClient) -> None:
    response = await strict_client.post(
        "/predict/digit",
        content=b"--xyz\r\nContent-Disposition: form-data\r\n\r\nno name\r\n--xyz--\r\n",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 422
    assert "multipart" in response.json()["detail"]


async def test_an_image_too_large_to_decode_is_a_422(strict_client: httpx.AsyncClient) -> None:
    huge = Image.new("1", (10_000, 6_000))  # 60 megapixels, a few kilobytes as PNG
    buffer = io.BytesIO()
    huge.save(buffer, format="PNG")
    response = await strict_client.post(
        "/predict/digit", files={"file": ("huge.png", buffer.getvalue(), "image/png")}
    )
    assert response.status_code == 422
    assert "10000×6000 pixels" in response.json()["detail"]


async def test_a_body_over_the_limit_is_a_413(serve: ServeApp) -> None:
    async with serve(max_body_bytes=4096) as (_, client):
        response = await client.post("/predict/digit", json={"pixels": [255.123456] * 784})
        assert response.status_code == 413
        assert "RNNSERVE_MAX_BODY_BYTES" in response.json()["detail"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b" " * 1000

        streamed = await client.post(
            "/forecast", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        small = await client.post("/predict/digit", json={"pixels": BAR})
        assert small.status_code == 200


async def test_the_default_body_limit_is_8_mib(serve: ServeApp) -> None:
    async with serve() as (app, client):
        assert app.state.settings.max_body_bytes == 8 * 1024 * 1024
        too_big = b'{"series": [' + b"1," * (4 * 1024 * 1024) + b'1], "horizon": 1}'
        response = await client.post(
            "/forecast", content=too_big, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413


async def test_a_full_queue_is_a_429_and_a_shutdown_answers_the_waiting_with_503(serve: ServeApp) -> None:
    # Only the default models: a request is refused before its body is read when no model of its task
    # has room (tests/app/test_service_variants.py covers a full default beside free variants).
    async with serve(
        max_batch_size=16, max_delay_ms=FOREVER_MS, max_queue_size=2, max_inputs_per_request=2, models=""
    ) as (app, client):
        waiting = [
            asyncio.ensure_future(client.post("/predict/digit", json={"pixels": BAR})) for _ in range(2)
        ]
        depth = {"model": "digit_lstm"}
        for _ in range(3000):  # wait (at most 30 s) until both wait in the queue
            if app.state.metrics.registry.get_sample_value("rnnserve_queue_depth", depth) == 2:
                break
            await asyncio.sleep(0.01)
        refused = await client.post("/predict/digit", json={"pixels": BAR})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"  # no model call yet: nothing to estimate from
        assert "2 inputs waiting" in refused.json()["detail"]
        assert "retry after 1 s" in refused.json()["detail"]
        # Refused before its body is read: a body that is not even JSON gets the same answer.
        garbage = await client.post(
            "/predict/digit", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert garbage.status_code == 429
    # Leaving the block stopped the app: the waiting requests were answered, not dropped.
    for response in await asyncio.wait_for(asyncio.gather(*waiting), 60):
        assert response.status_code == 503
        assert "shut down" in response.json()["detail"]


@pytest.fixture
def broken_repository(tmp_path: Path, models_dir: Path) -> Path:
    """A copy of the committed models whose digit model file is corrupt (one byte changed)."""
    repository = tmp_path / "models"
    shutil.copytree(models_dir, repository, symlinks=False)
    onnx = newest_version(repository, "digit_lstm") / "model.onnx"  # the version served
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    return repository


async def test_a_corrupt_model_keeps_the_service_not_ready_and_says_which_file(
    serve: ServeApp, broken_repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="service.registry"):
        async with serve(model_dir=broken_repository) as (_, client):
            assert (await client.get("/health/live")).status_code == 200
            ready = await client.get("/health/ready")
            assert ready.status_code == 503
            assert ready.json()["models"]["sine_gru"] == "ready"
            assert "sha256" in ready.json()["models"]["digit_lstm"]
            refused = await client.post("/predict/digit", json={"pixels": BAR})
            assert refused.status_code == 503
            assert "model.onnx" in refused.json()["detail"]
            forecast = await client.post("/forecast", json={"series": [1.0] * 20, "horizon": 2})
            assert forecast.status_code == 200
            described = (await client.get("/models")).json()["models"]
            ready_by_name = {m["name"]: m["ready"] for m in described}
            assert ready_by_name.pop("digit_lstm") is False and all(ready_by_name.values())
            assert "sine_gru" in ready_by_name
    (line,) = [r.getMessage() for r in caplog.records if "digit_lstm" in r.getMessage()]
    assert "model.onnx: sha256 is" in line and "restore it or re-export" in line


async def test_a_missing_repository_keeps_the_service_live_but_not_ready(
    serve: ServeApp, tmp_path: Path
) -> None:
    async with serve(model_dir=tmp_path / "nowhere") as (_, client):
        assert (await client.get("/health/live")).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "not ready"
        assert all("no such folder" in reason for reason in ready.json()["models"].values())
        assert (await client.post("/forecast", json={"series": [1.0] * 20, "horizon": 2})).status_code == 503


async def test_device_cuda_runs_on_the_gpu_or_keeps_the_service_not_ready(serve: ServeApp) -> None:
    async with serve(device="cuda") as (_, client):
        ready = await client.get("/health/ready")
        described = (await client.get("/models")).json()["models"]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert ready.status_code == 200
        assert {m["execution_provider"] for m in described} == {"CUDAExecutionProvider"}
    else:
        assert ready.status_code == 503
        assert "RNNSERVE_DEVICE=cuda" in ready.json()["models"]["digit_lstm"]
        assert "onnxruntime-gpu" in ready.json()["models"]["digit_lstm"]


async def test_unknown_routes_and_methods_answer_in_the_same_shape(api_client: httpx.AsyncClient) -> None:
    missing = await api_client.get("/predict")
    assert missing.status_code == 404 and "detail" in missing.json()
    wrong_method = await api_client.get("/predict/digit")
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()


async def test_a_request_refused_before_its_body_is_counted_once(serve: ServeApp) -> None:
    """With every digit model's queue full, a request is refused before its body is read: one refusal,
    counted once, against the default model, although each model of the task was asked."""
    names = ["digit_lstm", "digit_gru", "digit_rnn"]
    async with serve(
        max_batch_size=16, max_delay_ms=FOREVER_MS, max_queue_size=1, max_inputs_per_request=1
    ) as (app, client):
        waiting = [
            asyncio.ensure_future(client.post("/predict/digit", json={"pixels": BAR, "model": name}))
            for name in names
        ]
        sample = app.state.metrics.registry.get_sample_value
        for _ in range(3000):  # wait (at most 30 s) until each model has its one input queued
            if all(sample("rnnserve_queue_depth", {"model": name}) == 1 for name in names):
                break
            await asyncio.sleep(0.01)
        refused = await client.post("/predict/digit", json={"pixels": BAR})
        assert refused.status_code == 429
        assert "model digit_lstm has 1 inputs waiting" in refused.json()["detail"]
        counted = {
            name: sample("rnnserve_rejected_inputs_total", {"model": name, "reason": "overloaded"}) or 0
            for name in names
        }
        assert counted == {"digit_lstm": 1, "digit_gru": 0, "digit_rnn": 0}
    await asyncio.wait_for(asyncio.gather(*waiting), 60)
