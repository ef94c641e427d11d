"""The inputs forecasting users have: missing values (null, masked like padding) and quantiles, on
REST and V2 alike; requests without them are answered as before."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import onnxruntime
import pytest

from service.series import pad_left, recent_window

STEPS = np.arange(300)
SERIES = (3 * np.sin(STEPS / 7) + 0.01 * STEPS).tolist()
GAPS = [40, 41, 42, 200, 297]


def with_gaps(series: list[float], gaps: list[int]) -> list[float | None]:
    return [None if i in gaps else v for i, v in enumerate(series)]


def onnx_forecast(models_dir: Any, series: list[float | None], horizon: int) -> np.ndarray:
    """The committed forecaster's own answer, with the missing values masked by hand."""
    session = onnxruntime.InferenceSession(str(models_dir / "sine_gru" / "2" / "model.onnx"))
    values = np.array([np.nan if v is None else v for v in series], dtype=np.float64)
    window = recent_window(values, 1024)
    padded, mask = pad_left([window], 8)
    assert mask[0, -len(window) :][np.isnan(window)].sum() == 0 and not np.isnan(padded).any()
    mean = session.run(["mean"], {"series": padded, "mask": mask})[0]
    return np.asarray(mean[0, :horizon])


async def test_missing_values_are_masked_like_padding(api_client: httpx.AsyncClient, models_dir: Any) -> None:
    gappy = with_gaps(SERIES, GAPS)
    response = await api_client.post("/forecast", json={"series": gappy, "horizon": 12})
    assert response.status_code == 200, response.text
    forecast = np.array(response.json()["forecast"])
    np.testing.assert_allclose(forecast, onnx_forecast(models_dir, gappy, 12), rtol=1e-5, atol=1e-5)
    # A few missing values change the forecast a little, not a lot (the gaps are masked, not zeros).
    full = np.array(
        (await api_client.post("/forecast", json={"series": SERIES, "horizon": 12})).json()["forecast"]
    )
    assert np.abs(forecast - full).max() < 0.1 * np.abs(full).max()
    zeros = [0.0 if v is None else v for v in gappy]
    as_zeros = np.array(
        (await api_client.post("/forecast", json={"series": zeros, "horizon": 12})).json()["forecast"]
    )
    assert np.abs(forecast - full).max() < np.abs(as_zeros - full).max()


async def test_v2_takes_missing_values_as_null_and_gives_the_rest_answer(
    api_client: httpx.AsyncClient,
) -> None:
    gappy = with_gaps(SERIES, GAPS)
    rest = (await api_client.post("/forecast", json={"series": gappy, "horizon": 12})).json()["forecast"]
    tensors = [
        {"name": "series", "shape": [1, len(gappy)], "datatype": "FP64", "data": gappy},
        {"name": "horizon", "shape": [1, 1], "datatype": "INT32", "data": [12]},
    ]
    answer = await api_client.post("/v2/models/sine_gru/infer", json={"inputs": tensors})
    assert answer.status_code == 200, answer.text
    mean = next(o for o in answer.json()["outputs"] if o["name"] == "mean")["data"]
    np.testing.assert_allclose(mean, rest, rtol=1e-5, atol=1e-6)


async def test_too_few_observed_values_is_a_422_that_counts_them(api_client: httpx.AsyncClient) -> None:
    gappy = with_gaps([1.0] * 20, [0, 1, 2, 3, 4])
    response = await api_client.post("/forecast", json={"series": gappy, "horizon": 3})
    assert response.status_code == 422
    assert "series: has 20 values, 5 of them missing; sine_gru needs 16 to 4096" in response.json()["detail"]


async def test_quantiles_are_the_forecasts_gaussian_quantiles(api_client: httpx.AsyncClient) -> None:
    body = {"series": SERIES, "horizon": 12, "levels": [95], "quantiles": [0.025, 0.5, 0.975]}
    answer = (await api_client.post("/forecast", json=body)).json()
    assert list(answer["quantiles"]) == ["0.025", "0.5", "0.975"]
    np.testing.assert_allclose(answer["quantiles"]["0.5"], answer["forecast"], rtol=1e-6)
    np.testing.assert_allclose(answer["quantiles"]["0.975"], answer["intervals"]["95"]["upper"], rtol=1e-5)
    np.testing.assert_allclose(answer["quantiles"]["0.025"], answer["intervals"]["95"]["lower"], rtol=1e-5)
    tensors = [
        {"name": "series", "shape": [1, len(SERIES)], "datatype": "FP64", "data": SERIES},
        {"name": "horizon", "shape": [1, 1], "datatype": "INT32", "data": [12]},
        {"name": "quantiles", "shape": [1, 3], "datatype": "FP32", "data": [0.025, 0.5, 0.975]},
    ]
    v2 = (await api_client.post("/v2/models/sine_gru/infer", json={"inputs": tensors})).json()
    output = next(o for o in v2["outputs"] if o["name"] == "quantiles")
    assert output["shape"] == [1, 3, 12]
    rows = np.array(output["data"]).reshape(3, 12)
    for row, key in zip(rows, answer["quantiles"], strict=True):
        np.testing.assert_allclose(row, answer["quantiles"][key], rtol=1e-5, atol=1e-6)


async def test_a_request_without_the_new_fields_is_answered_as_before(api_client: httpx.AsyncClient) -> None:
    answer = (await api_client.post("/forecast", json={"series": SERIES, "horizon": 4})).json()
    assert list(answer) == ["forecast", "intervals", "model", "version"]
    v2 = await api_client.post(
        "/v2/models/sine_gru/infer",
        json={"inputs": [{"name": "series", "shape": [1, 300], "datatype": "FP64", "data": SERIES}]},
    )
    assert [o["name"] for o in v2.json()["outputs"]] == ["mean", "std"]


@pytest.mark.parametrize(
    ("quantiles", "message"),
    [
        ([0.0], "strictly between 0 and 1; got 0"),
        ([95], "send 0.95, not 95"),
        ([0.5, 0.5], "must not repeat"),
        ([], "must list 1 to 20"),
    ],
)
async def test_bad_quantiles_read_the_same_on_rest_and_v2(
    api_client: httpx.AsyncClient, quantiles: list[float], message: str
) -> None:
    rest = await api_client.post("/forecast", json={"series": SERIES, "horizon": 3, "quantiles": quantiles})
    assert rest.status_code == 422 and message in rest.json()["detail"]
    if not quantiles:
        return  # a tensor of no values has no shape to send
    tensors = [
        {"name": "series", "shape": [1, len(SERIES)], "datatype": "FP64", "data": SERIES},
        {"name": "quantiles", "shape": [1, len(quantiles)], "datatype": "FP32", "data": quantiles},
    ]
    v2 = await api_client.post("/v2/models/sine_gru/infer", json={"inputs": tensors})
    assert v2.status_code == 400
    assert v2.json()["error"] == f"quantiles: {rest.json()['errors'][0]['msg']}"


async def test_the_quantiles_output_needs_its_input(api_client: httpx.AsyncClient) -> None:
    body = {
        "inputs": [{"name": "series", "shape": [1, 300], "datatype": "FP64", "data": SERIES}],
        "outputs": [{"name": "quantiles"}],
    }
    answer = await api_client.post("/v2/models/sine_gru/infer", json=body)
    assert answer.status_code == 400 and "comes only with the input 'quantiles'" in answer.json()["error"]


def test_pad_left_masks_missing_values() -> None:
    values, mask = pad_left([np.array([1.0, np.nan, 3.0], np.float32), np.array([5.0], np.float32)], 4)
    np.testing.assert_array_equal(values, [[0, 1, 0, 3], [0, 0, 0, 5]])
    np.testing.assert_array_equal(mask, [[0, 1, 0, 1], [0, 0, 0, 1]])
