"""The HTTP contract of POST /predict/digit and POST /forecast, on the real app with its lifespan,
the committed models in ONNX Runtime and real MNIST test images."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from conftest import ServeApp

FOREVER_MS = 3_600_000.0


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def metric(app: FastAPI, name: str, **labels: str) -> float:
    value = app.state.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def sine(length: int, scale: float = 1.0, phase: float = 0.0) -> list[float]:
    t = np.arange(length, dtype=np.float64)
    return list(scale * (np.sin(t / 6.0 + phase) + 0.01 * t))


# Digits


async def test_a_digit_answer_has_the_contract_fields(
    api_client: httpx.AsyncClient, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    response = await api_client.post("/predict/digit", json={"pixels": images[0].tolist()})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"digit", "confidence", "probabilities", "model", "version", "precision"}
    assert answer["digit"] == labels[0]
    assert answer["model"] == "digit_lstm"
    assert answer["version"].isdigit()
    assert answer["precision"] == "fp32"  # auto: the int8 graph would make a lone image wait longer
    assert len(answer["probabilities"]) == 10
    assert sum(answer["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert answer["confidence"] == max(answer["probabilities"])
    assert response.headers["content-type"] == "application/json"


async def test_every_input_form_gives_the_same_digit(
    api_client: httpx.AsyncClient, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    for index in (0, 1, 2, 3, 4, 7, 11):
        image = images[index]
        forms = {
            "pixels 28×28": await api_client.post("/predict/digit", json={"pixels": image.tolist()}),
            "pixels 784": await api_client.post("/predict/digit", json={"pixels": image.ravel().tolist()}),
            "float pixels": await api_client.post(
                "/predict/digit", json={"pixels": (image.astype(float) + 0.0).tolist()}
            ),
            "base64 PNG": await api_client.post("/predict/digit", json={"image": b64(png(image))}),
            "data URL": await api_client.post(
                "/predict/digit", json={"image": "data:image/png;base64," + b64(png(image))}
            ),
            "multipart": await api_client.post(
                "/predict/digit", files={"file": ("digit.png", png(image), "image/png")}
            ),
        }
        many = await api_client.post(
            "/predict/digit",
            json={"inputs": [{"pixels": image.tolist()}, {"image": b64(png(image))}]},
        )
        assert many.status_code == 200, many.text
        digits = {name: r.json()["digit"] for name, r in forms.items()}
        digits |= {f"inputs[{i}]": p["digit"] for i, p in enumerate(many.json()["predictions"])}
        assert set(digits.values()) == {labels[index]}, digits
        exact = forms["pixels 28×28"].json()["probabilities"]
        assert forms["pixels 784"].json()["probabilities"] == exact
        assert many.json()["predictions"][0]["probabilities"] == exact


async def test_a_hundred_mnist_test_images_sent_as_png_files_are_classified_as_well_as_raw_pixels(
    serve: ServeApp, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    picks = np.random.default_rng(3).choice(len(images), size=100, replace=False)
    async with serve() as (_, client):
        uploads = await asyncio.gather(
            *(
                client.post("/predict/digit", files={"file": (f"{i}.png", png(images[i]), "image/png")})
                for i in picks
            )
        )
        raw = await client.post(
            "/predict/digit", json={"inputs": [{"pixels": images[i].tolist()} for i in picks]}
        )
    assert all(r.status_code == 200 for r in uploads)
    from_png = np.array([r.json()["digit"] for r in uploads])
    from_pixels = np.array([p["digit"] for p in raw.json()["predictions"]])
    png_accuracy = float((from_png == labels[picks]).mean())
    pixel_accuracy = float((from_pixels == labels[picks]).mean())
    print(f"accuracy on 100 MNIST test images: PNG {png_accuracy:.2f}, raw pixels {pixel_accuracy:.2f}")
    assert png_accuracy >= 0.95
    assert png_accuracy >= pixel_accuracy - 0.02


async def test_digits_batched_together_equal_digits_computed_alone(
    serve: ServeApp, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_test_set
    batch = [images[i].tolist() for i in range(8)]
    async with serve() as (app, client):
        alone = [(await client.post("/predict/digit", json={"pixels": p})).json() for p in batch]
        assert metric(app, "rnnserve_batch_size_count", model="digit_lstm") == 8  # one call each
    async with serve(max_batch_size=8, max_delay_ms=FOREVER_MS) as (app, client):
        together = await asyncio.gather(*(client.post("/predict/digit", json={"pixels": p}) for p in batch))
        assert metric(app, "rnnserve_batch_size_count", model="digit_lstm") == 1  # one call for all
        assert metric(app, "rnnserve_batch_size_sum", model="digit_lstm") == 8
    for single, batched in zip(alone, together, strict=True):
        assert batched.json()["digit"] == single["digit"]
        np.testing.assert_allclose(
            batched.json()["probabilities"], single["probabilities"], atol=1e-5, rtol=0
        )


async def test_sixty_four_concurrent_clients_are_served_in_batches_seen_in_metrics(
    serve: ServeApp, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_test_set
    async with serve() as (_, client):
        responses = await asyncio.gather(
            *(client.post("/predict/digit", json={"pixels": images[i].tolist()}) for i in range(64))
        )
        metrics_text = (await client.get("/metrics")).text
    assert all(r.status_code == 200 for r in responses)
    calls, inputs = batch_size_count_and_sum(metrics_text, "digit_lstm")
    assert inputs == 64
    assert calls < 64, "no two requests shared a model call"


def batch_size_count_and_sum(metrics_text: str, model: str) -> tuple[float, float]:
    """How many model calls, and how many inputs in them, /metrics reports for `model`."""
    (family,) = (f for f in text_string_to_metric_families(metrics_text) if f.name == "rnnserve_batch_size")
    values = {
        s.name: s.value for s in family.samples if s.labels.get("model") == model and "le" not in s.labels
    }
    return values["rnnserve_batch_size_count"], values["rnnserve_batch_size_sum"]


# Forecasts


async def test_a_forecast_answer_has_the_contract_fields(api_client: httpx.AsyncClient) -> None:
    response = await api_client.post("/forecast", json={"series": sine(200), "horizon": 32})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"forecast", "intervals", "model", "version", "precision"}
    assert (answer["model"], answer["precision"]) == ("series_gru", "fp32")
    assert len(answer["forecast"]) == 32
    assert set(answer["intervals"]) == {"80", "95"}
    forecast = np.array(answer["forecast"])
    for level in ("80", "95"):
        lower, upper = (np.array(answer["intervals"][level][side]) for side in ("lower", "upper"))
        assert lower.shape == upper.shape == (32,)
        assert np.all(lower <= forecast) and np.all(forecast <= upper)
    width_80 = np.subtract(answer["intervals"]["80"]["upper"], answer["intervals"]["80"]["lower"])
    width_95 = np.subtract(answer["intervals"]["95"]["upper"], answer["intervals"]["95"]["lower"])
    assert np.all(width_95 > width_80)


async def test_levels_name_their_intervals(api_client: httpx.AsyncClient) -> None:
    response = await api_client.post(
        "/forecast", json={"series": sine(64), "horizon": 5, "levels": [50, 97.5]}
    )
    assert response.status_code == 200, response.text
    assert set(response.json()["intervals"]) == {"50", "97.5"}


async def test_forecasts_of_different_lengths_and_horizons_batched_together_equal_each_alone(
    serve: ServeApp,
) -> None:
    lengths = [16, 17, 63, 200, 256, 257, 1000, 4096]
    requests = [
        {"series": sine(n, scale=10.0 ** (i % 4 - 1), phase=i), "horizon": [1, 7, 16, 32, 64, 100, 128, 3][i]}
        for i, n in enumerate(lengths)
    ]
    requests[3]["levels"] = [60, 99]
    async with serve() as (_, client):
        alone = [(await client.post("/forecast", json=r)).json() for r in requests]
        many = (await client.post("/forecast", json={"inputs": requests})).json()["forecasts"]
    async with serve(max_batch_size=len(requests), max_delay_ms=FOREVER_MS) as (app, client):
        together = [
            r.json() for r in await asyncio.gather(*(client.post("/forecast", json=r) for r in requests))
        ]
        assert metric(app, "rnnserve_batch_size_count", model="series_gru") == 1
    for single, *batched in zip(alone, together, many, strict=True):
        for answer in batched:
            assert_same_forecast(answer, single)


def assert_same_forecast(answer: dict[str, Any], expected: dict[str, Any]) -> None:
    scale = max(1.0, float(np.abs(expected["forecast"]).max()))
    assert len(answer["forecast"]) == len(expected["forecast"])
    np.testing.assert_allclose(answer["forecast"], expected["forecast"], atol=1e-5 * scale, rtol=0)
    assert set(answer["intervals"]) == set(expected["intervals"])
    for level, bounds in expected["intervals"].items():
        for side in ("lower", "upper"):
            np.testing.assert_allclose(
                answer["intervals"][level][side], bounds[side], atol=1e-5 * scale, rtol=0
            )


async def test_only_the_most_recent_context_matters(api_client: httpx.AsyncClient) -> None:
    models = (await api_client.get("/models")).json()["models"]
    (forecaster,) = [m for m in models if m["name"] == "series_gru"]
    context = forecaster["metadata"]["config"]["context_length"]
    series = sine(context + 744)
    full = (await api_client.post("/forecast", json={"series": series, "horizon": 10})).json()
    recent = (await api_client.post("/forecast", json={"series": series[-context:], "horizon": 10})).json()
    assert full["forecast"] == recent["forecast"]
