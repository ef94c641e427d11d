"""One table of the mistakes people make, sent through both protocols: the REST routes answer 422 and
the V2 route 400, each naming the place in its own terms, with the very same message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

if TYPE_CHECKING:
    from conftest import ServeApp

BAR = np.zeros((28, 28), np.float32)
BAR[:, 12:16] = 200  # a "1"


def dark_on_light() -> np.ndarray:
    return 255 - BAR


def uniform(value: float) -> np.ndarray:
    return np.full((28, 28), value, np.float32)


# (case, model, REST body, V2 tensors, REST place, V2 place, words the message holds)
MISTAKES: list[tuple[str, str, dict[str, Any], list[dict[str, Any]], str, str, str]] = []


def digit(case: str, image: np.ndarray, words: str) -> None:
    rest = {"pixels": image.tolist()}
    v2 = [{"name": "pixels", "shape": [1, 28, 28], "datatype": "FP32", "data": image.ravel().tolist()}]
    MISTAKES.append((case, "digit_lstm", rest, v2, "pixels", "pixels[0]", words))


def forecast(
    case: str,
    series: list[float],
    horizon: int,
    rest_place: str,
    v2_place: str,
    words: str,
    dtype: str = "FP32",
) -> None:
    rest = {"series": series, "horizon": horizon}
    v2 = [
        {"name": "series", "shape": [1, len(series)], "datatype": dtype, "data": series},
        {"name": "horizon", "shape": [1, 1], "datatype": "INT32", "data": [horizon]},
    ]
    MISTAKES.append((case, "series_gru", rest, v2, rest_place, v2_place, words))


digit("above 255", uniform(300), "must lie in 0–255")
digit("negative", BAR - 1, "must lie in 0–255")
digit("blank", uniform(0), "holds no digit")
digit("uniform", uniform(7), "every pixel is 7")
digit("scaled to 0–1", BAR / 255, "look scaled to 0–1")
digit("dark on light", dark_on_light(), "dark on light")
forecast("15 values", [1.0] * 15, 3, "series", "series[0]", "has 15 values; series_gru needs 16 to 4096")
forecast("4097 values", [1.0] * 4097, 3, "series", "series[0]", "has 4097 values")
forecast("horizon 0", [1.0] * 20, 0, "horizon", "horizon", "forecasts 1 to 128 steps")
forecast("horizon 129", [1.0] * 20, 129, "horizon", "horizon", "is 129")
forecast("huge value", [1e39] * 20, 3, "series", "series[0]", "within ±3.4e+38", dtype="FP64")
forecast("overflowing", [3e38, -3e38] * 10, 3, "series", "series[0]", "too large for the model")


@pytest.mark.parametrize(
    ("case", "model", "rest", "v2", "rest_place", "v2_place", "words"), MISTAKES, ids=[m[0] for m in MISTAKES]
)
async def test_a_mistake_reads_the_same_on_rest_and_v2(
    serve: ServeApp,
    case: str,
    model: str,
    rest: dict[str, Any],
    v2: list[dict[str, Any]],
    rest_place: str,
    v2_place: str,
    words: str,
) -> None:
    path = "/predict/digit" if model.startswith("digit") else "/forecast"
    async with serve() as (_, client):
        on_rest = await client.post(path, json=rest)
        on_v2 = await client.post(f"/v2/models/{model}/infer", json={"inputs": v2})
    assert on_rest.status_code == 422, on_rest.text
    assert on_v2.status_code == 400, on_v2.text
    [error] = on_rest.json()["errors"]
    assert error["loc"] == rest_place and words in error["msg"]
    assert on_v2.json()["error"] == f"{v2_place}: {error['msg']}"


async def test_every_bad_row_of_a_v2_batch_is_named_with_the_rest_wording(serve: ServeApp) -> None:
    images = np.stack([BAR, uniform(0), BAR / 255])
    tensor = {"name": "pixels", "shape": [3, 28, 28], "datatype": "FP32", "data": images.ravel().tolist()}
    rest = {"inputs": [{"pixels": image.tolist()} for image in images]}
    async with serve() as (_, client):
        on_v2 = await client.post("/v2/models/digit_lstm/infer", json={"inputs": [tensor]})
        on_rest = await client.post("/predict/digit", json=rest)
    assert [e["loc"] for e in on_rest.json()["errors"]] == ["inputs[1].pixels", "inputs[2].pixels"]
    expected = "; ".join(
        f"pixels[{i}]: {e['msg']}" for i, e in zip((1, 2), on_rest.json()["errors"], strict=True)
    )
    assert on_v2.json()["error"] == expected


async def test_a_null_among_pixels_is_named_by_its_position(api_client: httpx.AsyncClient) -> None:
    pixels: list[float | None] = [0.0] * 784
    pixels[300] = None
    response = await api_client.post("/predict/digit", json={"pixels": pixels})
    assert response.status_code == 422
    assert "found null at [300]" in response.json()["detail"]


async def test_a_body_that_is_not_json_names_the_content_type_it_came_as(
    api_client: httpx.AsyncClient,
) -> None:
    response = await api_client.post("/forecast", files={"file": ("s.csv", b"1,2,3", "text/csv")})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "not valid JSON" in detail and "came as multipart/form-data" in detail
