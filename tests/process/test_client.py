"""The Python client (`client/rnnserve_client`) against a real service on 127.0.0.1, with real MNIST
digits. Each answer the client gives is compared with the one the service's own routes give for the same
input. Its rules that need no service (retries against scripted answers, refused inputs and settings)
are in test_client_offline.py."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from rnnserve_client import (
    AsyncClient,
    AuthenticationError,
    Client,
    DigitPrediction,
    ForecastInput,
    InvalidInputError,
    OverloadedError,
    RnnserveError,
)
from season_model import SEASONAL_MODEL, expected_forecast, season_repository
from serving import REPO_ROOT, one_worker_service, start_service

from service.repository import model_names, newest_version

SINE = [float(np.sin(t / 4)) for t in range(64)]
RAMP = [float(t) for t in range(16)]


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with one_worker_service(tmp_path_factory.mktemp("client") / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def digits(mnist_test_set: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, list[int]]:
    """The first eight MNIST test images (uint8, 28×28, white on black) and their labels."""
    images, labels = mnist_test_set
    return images[:8], [int(label) for label in labels[:8]]


def image_file(pixels: np.ndarray, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind, **({"lossless": True} if kind == "WEBP" else {}))
    return buffer.getvalue()


def uploaded(url: str, content: bytes) -> dict[str, Any]:
    """The service's own answer to an image file uploaded as multipart (curl -F file=@digit.png)."""
    response = httpx.post(f"{url}/predict/digit", files={"file": ("digit", content)}, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def posted(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The service's own answer to a JSON body."""
    response = httpx.post(f"{url}{path}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def check_prediction(got: DigitPrediction, expected: dict[str, Any], label: int) -> None:
    """The client's answer is the service's own, and right where the service is right."""
    assert got.digit == expected["digit"]
    assert got.probabilities == pytest.approx(expected["probabilities"], abs=1e-5)
    assert got.confidence == pytest.approx(expected["confidence"], abs=1e-5)
    names = ("model", "version", "precision")
    assert (got.model, got.version, got.precision) == tuple(expected[name] for name in names)
    if expected["digit"] == label:
        assert got.digit == label


def check_many_right(predictions: list[DigitPrediction], labels: list[int]) -> None:
    right = sum(p.digit == label for p, label in zip(predictions, labels, strict=True))
    assert right >= len(labels) - 1, f"{right} of {len(labels)} right: {[p.digit for p in predictions]}"


def test_predict_digit_from_a_file_path(
    url: str, digits: tuple[np.ndarray, list[int]], tmp_path: Path
) -> None:
    images, labels = digits
    with Client(url) as client:
        for index in range(3):
            path = tmp_path / f"digit{index}.png"
            path.write_bytes(image_file(images[index]))
            expected = uploaded(url, path.read_bytes())
            check_prediction(client.predict_digit(path), expected, labels[index])
            check_prediction(client.predict_digit(str(path)), expected, labels[index])


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP", "BMP"])
def test_predict_digit_from_image_bytes(url: str, digits: tuple[np.ndarray, list[int]], kind: str) -> None:
    images, labels = digits
    with Client(url) as client:
        predictions = []
        for pixels, label in zip(images, labels, strict=True):
            content = image_file(pixels, kind)
            predictions.append(client.predict_digit(content))
            check_prediction(predictions[-1], uploaded(url, content), label)
    check_many_right(predictions, labels)


def test_predict_digit_from_a_pil_image(url: str, digits: tuple[np.ndarray, list[int]]) -> None:
    images, labels = digits
    with Client(url) as client:
        for pixels, label in zip(images[:4], labels[:4], strict=True):
            expected = uploaded(url, image_file(pixels))  # the client sends a PIL image as PNG
            check_prediction(client.predict_digit(Image.fromarray(pixels)), expected, label)


def test_predict_digit_from_numpy_pixels(url: str, digits: tuple[np.ndarray, list[int]]) -> None:
    images, labels = digits
    with Client(url) as client:
        predictions = []
        for pixels, label in zip(images, labels, strict=True):
            expected = posted(url, "/predict/digit", {"pixels": pixels.tolist()})
            predictions.append(client.predict_digit(pixels))  # 28×28 uint8
            check_prediction(predictions[-1], expected, label)
            check_prediction(client.predict_digit(pixels.reshape(784).astype(np.float32)), expected, label)
    check_many_right(predictions, labels)


def test_predict_digits_many_at_once(url: str, digits: tuple[np.ndarray, list[int]], tmp_path: Path) -> None:
    images, labels = digits
    expected = [posted(url, "/predict/digit", {"pixels": pixels.tolist()}) for pixels in images]
    with Client(url) as client:
        # uint8 arrays travel as application/octet-stream; a stacked array too
        for many in (client.predict_digits(list(images)), client.predict_digits(images)):
            for prediction, answer, label in zip(many, expected, labels, strict=True):
                check_prediction(prediction, answer, label)
        # a mix of every kind travels as JSON `inputs`, answered in order
        path = tmp_path / "digit.png"
        path.write_bytes(image_file(images[0]))
        mixed = [path, image_file(images[1]), Image.fromarray(images[2]), images[3].astype(np.float64)]
        from_mixed = client.predict_digits(mixed)
    files = [uploaded(url, image_file(pixels)) for pixels in images[:3]]
    for prediction, answer, label in zip(from_mixed, [*files, expected[3]], labels[:4], strict=True):
        check_prediction(prediction, answer, label)


def test_forecast_one_and_many(url: str) -> None:
    with Client(url) as client:
        one = client.forecast(SINE, horizon=8, levels=(80, 95))
        many = client.forecast_many(
            [ForecastInput(SINE, 8), ForecastInput(np.array(RAMP), 2, levels=(50,)), ForecastInput(RAMP, 3)]
        )
    expected = posted(url, "/forecast", {"series": SINE, "horizon": 8, "levels": [80, 95]})
    assert one.forecast == pytest.approx(expected["forecast"], abs=1e-5)
    assert set(one.intervals) == {"80", "95"}
    for level in ("80", "95"):
        assert one.intervals[level].lower == pytest.approx(expected["intervals"][level]["lower"], abs=1e-5)
        assert one.intervals[level].upper == pytest.approx(expected["intervals"][level]["upper"], abs=1e-5)
    assert one.interval(95) == one.intervals["95"]
    band = one.interval(80)
    assert all(
        low < mean < high for low, mean, high in zip(band.lower, one.forecast, band.upper, strict=True)
    )
    assert [len(f.forecast) for f in many] == [8, 2, 3]
    assert many[0].forecast == pytest.approx(one.forecast, abs=1e-5)
    assert list(many[1].intervals) == ["50"]
    assert many[1].forecast == pytest.approx([16, 17], abs=0.5)  # a straight line goes on
    with pytest.raises(KeyError, match="no 99 % interval"):
        one.interval(99)


def test_forecast_with_missing_values_and_quantiles(url: str) -> None:
    gappy: list[float | None] = list(SINE)
    gappy[3] = None
    with_nan = np.array(SINE, dtype=np.float64)
    with_nan[3] = np.nan
    with Client(url) as client:
        answer = client.forecast(gappy, horizon=4, quantiles=(0.1, 0.5, 0.9))
        from_array = client.forecast(with_nan, horizon=4)
    expected = posted(url, "/forecast", {"series": gappy, "horizon": 4, "quantiles": [0.1, 0.5, 0.9]})
    assert answer.forecast == pytest.approx(expected["forecast"], abs=1e-5)
    assert from_array.forecast == pytest.approx(expected["forecast"], abs=1e-5)
    assert list(answer.quantiles) == ["0.1", "0.5", "0.9"]
    assert answer.quantiles["0.5"] == pytest.approx(answer.forecast, abs=1e-5)
    assert answer.quantiles["0.9"] == pytest.approx(expected["quantiles"]["0.9"], abs=1e-5)
    assert from_array.quantiles == {}


@pytest.fixture(scope="module")
def season_url(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A service that also serves a forecaster taking a season length hint (tests/season_model.py)."""
    root = tmp_path_factory.mktemp("season")
    url, process = start_service(season_repository(models_dir, root), root / "server.log", workers="1")
    try:
        yield url
    finally:
        process.terminate()
        process.wait()


def test_the_season_length_goes_with_each_series_or_with_all(season_url: str) -> None:
    history = [float(v) for v in np.random.default_rng(3).normal(size=50).round(3)]
    with Client(season_url) as client:
        hinted = client.forecast(history, horizon=8, model=SEASONAL_MODEL, season_length=12)
        unhinted = client.forecast(history, horizon=8, model=SEASONAL_MODEL)
        own = [ForecastInput(history, 8, season_length=7), ForecastInput(history, 8)]
        mixed = client.forecast_many(own, model=SEASONAL_MODEL, season_length=12)
    body = {"series": history, "horizon": 8, "season_length": 12, "model": SEASONAL_MODEL}
    expected = posted(season_url, "/forecast", body)
    assert hinted.forecast == pytest.approx(expected["forecast"], abs=1e-6)
    assert hinted.forecast == pytest.approx(expected_forecast(history, 12, 8), abs=1e-6)
    assert unhinted.forecast == pytest.approx(expected_forecast(history, None, 8), abs=1e-6)
    assert mixed[0].forecast == pytest.approx(expected_forecast(history, 7, 8), abs=1e-6)
    assert mixed[1].forecast == hinted.forecast


async def test_the_async_client_sends_the_season_length(season_url: str) -> None:
    history = [float(v) for v in range(40)]
    async with AsyncClient(season_url) as client:
        one = await client.forecast(history, 4, model=SEASONAL_MODEL, season_length=5)
        (many,) = await client.forecast_many(
            [ForecastInput(history, 4)], model=SEASONAL_MODEL, season_length=5
        )
    assert one.forecast == many.forecast == pytest.approx(expected_forecast(history, 5, 4))


def test_a_season_length_for_a_model_without_one_carries_the_servers_message(url: str) -> None:
    with Client(url) as client, pytest.raises(InvalidInputError) as caught:
        client.forecast(SINE, horizon=2, season_length=12, model="sine_gru")
    assert caught.value.status_code == 422
    assert caught.value.message.startswith(
        "season_length: sine_gru takes no season_length; it finds its period"
    )


def test_health_and_models(url: str) -> None:
    with Client(url) as client:
        health = client.health()
        listing = client.models()
    assert (health.live, health.ready, health.status) == (True, True, "ready")
    assert health.models["digit_lstm"] == health.models["sine_gru"] == "ready"
    assert set(health.models.values()) == {"ready"}
    raw = httpx.get(f"{url}/models", timeout=30).json()
    assert listing.backend == raw["backend"] and listing.requested_device == raw["requested_device"]
    assert [m.name for m in listing.models] == [m["name"] for m in raw["models"]]
    digit_model = listing.model("digit_lstm")
    newest = newest_version(REPO_ROOT / "models", "digit_lstm").name
    assert digit_model.ready and digit_model.task == "digit-classification" and digit_model.version == newest
    assert digit_model.batching is not None and digit_model.batching.max_batch_size == 64
    assert (digit_model.precision, digit_model.precision_reason) == (
        raw["models"][0]["precision"],
        raw["models"][0]["precision_reason"],
    )
    assert (digit_model.precision, listing.model("digit_rnn").precision) == ("int8", "int8")
    assert digit_model.threads == raw["models"][0]["threads"] and digit_model.threads >= 1
    assert digit_model.metadata["metrics"] == raw["models"][0]["metadata"]["metrics"]
    assert listing.model("sine_gru").task == "forecasting"


def test_a_request_names_its_model(url: str, digits: tuple[np.ndarray, list[int]]) -> None:
    with Client(url) as client:
        named = client.predict_digits(list(digits[0][:2]), model="digit_lstm")
        forecast = client.forecast(SINE, horizon=4, model="sine_gru")
        with pytest.raises(InvalidInputError, match="choose one of digit_lstm") as wrong:
            client.predict_digit(digits[0][0], model="sine_gru")
    assert [p.model for p in named] == ["digit_lstm"] * 2 and forecast.model == "sine_gru"
    assert wrong.value.status_code == 422


async def test_the_async_client(url: str, digits: tuple[np.ndarray, list[int]], tmp_path: Path) -> None:
    images, labels = digits
    path = tmp_path / "digit.png"
    path.write_bytes(image_file(images[0]))
    async with AsyncClient(url) as client:
        from_path = await client.predict_digit(path)
        from_pixels = await client.predict_digit(images[1])
        many = await client.predict_digits([images[2], Image.fromarray(images[3])])
        one = await client.forecast(SINE, horizon=4)
        forecasts = await client.forecast_many([ForecastInput(SINE, 4), ForecastInput(RAMP, 2)])
        health = await client.health()
        listing = await client.models()
        with pytest.raises(InvalidInputError, match="series: has 3 values"):
            await client.forecast([1, 2, 3], horizon=4)
    check_prediction(from_path, uploaded(url, path.read_bytes()), labels[0])
    check_prediction(from_pixels, posted(url, "/predict/digit", {"pixels": images[1].tolist()}), labels[1])
    check_prediction(many[0], posted(url, "/predict/digit", {"pixels": images[2].tolist()}), labels[2])
    check_prediction(many[1], uploaded(url, image_file(images[3])), labels[3])
    assert one.forecast == pytest.approx(forecasts[0].forecast, abs=1e-5)
    assert [len(f.forecast) for f in forecasts] == [4, 2]
    assert health.ready and {m.name for m in listing.models} == set(model_names(REPO_ROOT / "models"))


def test_api_keys(digits: tuple[np.ndarray, list[int]], tmp_path: Path) -> None:
    images, labels = digits
    with one_worker_service(tmp_path / "server.log", api_keys="k1") as keyed:
        with Client(keyed) as anonymous:
            assert anonymous.health().ready  # health checks stay open
            with pytest.raises(AuthenticationError) as missing:
                anonymous.predict_digit(images[0])
        with Client(keyed, api_key="k2") as wrong, pytest.raises(AuthenticationError) as refused:
            wrong.models()
        with Client(keyed, api_key="k1") as right:
            assert right.predict_digit(images[0]).digit == labels[0]
            assert {m.name for m in right.models().models} == set(model_names(REPO_ROOT / "models"))
    assert missing.value.status_code == 401 and missing.value.attempts == 1
    assert missing.value.message.startswith("an API key is required: send it as `Authorization: Bearer")
    assert refused.value.message.startswith("the API key is wrong")
    assert "401: an API key is required" in str(missing.value)


def test_a_422_carries_the_servers_message(url: str) -> None:
    bad = {"inputs": [{"series": SINE, "horizon": 2}, {"series": RAMP, "horizon": 2, "levels": [0.9]}]}
    raw = httpx.post(f"{url}/forecast", json=bad, timeout=30).json()
    with Client(url) as client:
        with pytest.raises(InvalidInputError) as caught:
            client.forecast_many([ForecastInput(SINE, 2), ForecastInput(RAMP, 2, levels=(0.9,))])
        with pytest.raises(InvalidInputError, match="the image holds no digit"):
            client.predict_digit(np.zeros((28, 28), dtype=np.uint8))
    error = caught.value
    assert error.status_code == 422 and error.message == raw["detail"] == "inputs[1].levels: " + (
        "levels are percentages: send 90, not 0.9"
    )
    assert [(e.loc, e.msg) for e in error.errors] == [(e["loc"], e["msg"]) for e in raw["errors"]]
    assert error.body == raw and error.request_id
    assert isinstance(error, RnnserveError)


def test_a_real_429_is_retried_after_retry_after(
    digits: tuple[np.ndarray, list[int]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A queue of one input, held for 3 s while the batch waits to fill: a second request gets 429."""
    images, labels = digits
    settings = {"max_queue_size": "1", "max_inputs_per_request": "1", "max_batch_size": "2"}
    with (
        one_worker_service(tmp_path / "server.log", max_delay_ms="3000", **settings) as held,
        Client(held) as holder,
        ThreadPoolExecutor(1) as background,
    ):
        first = background.submit(holder.predict_digit, images[0])
        while queue_depth(holder, "digit_lstm") != 1:
            time.sleep(0.02)
        with Client(held, retries=0) as impatient, pytest.raises(OverloadedError) as refused:
            impatient.predict_digit(images[1])
        with Client(held, retries=8) as patient, caplog.at_level(logging.INFO, logger="rnnserve_client"):
            second = patient.predict_digit(images[1])
        assert first.result().digit == labels[0] and second.digit == labels[1]
    assert refused.value.status_code == 429 and refused.value.attempts == 1
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s >= 1
    assert "inputs waiting (the limit is 1): retry after" in refused.value.message
    retries = [vars(r) for r in caplog.records if getattr(r, "status_code", None) == 429]
    assert retries, "the second request was never refused: the queue did not hold the first"
    for retry in retries:
        assert retry["retry_after_s"] >= 1 and retry["wait_s"] >= retry["retry_after_s"]


def queue_depth(client: Client, model: str) -> int:
    batching = client.models().model(model).batching
    assert batching is not None, f"{model} is not loaded"
    return batching.queue_depth


@pytest.mark.parametrize(("readme", "heading"), [("client/README.md", "# rnnserve-client")])
def test_the_readme_example_runs(
    url: str, digits: tuple[np.ndarray, list[int]], tmp_path: Path, readme: str, heading: str
) -> None:
    text = (REPO_ROOT / readme).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text[text.index(heading) :], flags=re.DOTALL)
    assert blocks, f"{readme} has no ```python block after {heading}"
    images, labels = digits
    (tmp_path / "digit.png").write_bytes(image_file(images[0]))
    program = blocks[0].replace("http://127.0.0.1:8000", url)
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    print(done.stdout)
    assert lines[0].startswith("Health(live=True, ready=True")
    assert lines[1].split()[0] == str(labels[0])
    assert lines[-1].startswith("422 series: has 3 values; series_gru needs 16 to 4096")
