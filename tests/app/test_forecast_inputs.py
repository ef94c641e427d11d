"""The inputs forecasting users have: missing values (null, masked like padding), quantiles and a season
length hint, on REST and V2 alike; requests without them are answered as before."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import onnxruntime
import pytest
from season_model import MAX_SEASON, SEASONAL_MODEL, expected_forecast, season_repository

from service.repository import newest_version
from service.series import pad_left, recent_window

if TYPE_CHECKING:
    from conftest import ServeApp

STEPS = np.arange(300)
SERIES = (3 * np.sin(STEPS / 7) + 0.01 * STEPS).tolist()
GAPS = [40, 41, 42, 200, 297]
FOREVER_MS = 3_600_000.0
NO_SEASON = (
    "sine_gru takes no season_length; it finds its period itself: leave the field out, or choose a "
    "forecaster whose metadata gives config.max_season (GET /models)"
)


def with_gaps(series: list[float], gaps: list[int]) -> list[float | None]:
    return [None if i in gaps else v for i, v in enumerate(series)]


def onnx_forecast(
    models_dir: Any, series: list[float | None], horizon: int, model: str = "series_gru", version: str = ""
) -> np.ndarray:
    """A committed forecaster's own answer (its newest version unless one is named), with the missing
    values masked by hand (and no season hint for a graph that takes one)."""
    folder = models_dir / model / version if version else newest_version(models_dir, model)
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    patch = json.loads((folder / "metadata.json").read_text())["config"]["patch_size"]
    values = np.array([np.nan if v is None else v for v in series], dtype=np.float64)
    window = recent_window(values, 1024)
    padded, mask = pad_left([window], patch)
    assert mask[0, -len(window) :][np.isnan(window)].sum() == 0 and not np.isnan(padded).any()
    feeds = {"series": padded, "mask": mask}
    if "season" in {i.name for i in session.get_inputs()}:
        feeds["season"] = np.zeros((1, 1), dtype=np.float32)
    mean = session.run(["mean"], feeds)[0]
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
    answer = await api_client.post("/v2/models/series_gru/infer", json={"inputs": tensors})
    assert answer.status_code == 200, answer.text
    mean = next(o for o in answer.json()["outputs"] if o["name"] == "mean")["data"]
    np.testing.assert_allclose(mean, rest, rtol=1e-5, atol=1e-6)


async def test_too_few_observed_values_is_a_422_that_counts_them(api_client: httpx.AsyncClient) -> None:
    gappy = with_gaps([1.0] * 20, [0, 1, 2, 3, 4])
    response = await api_client.post("/forecast", json={"series": gappy, "horizon": 3})
    assert response.status_code == 422
    assert (
        "series: has 20 values, 5 of them missing; series_gru needs 16 to 4096" in response.json()["detail"]
    )


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
    v2 = (await api_client.post("/v2/models/series_gru/infer", json={"inputs": tensors})).json()
    output = next(o for o in v2["outputs"] if o["name"] == "quantiles")
    assert output["shape"] == [1, 3, 12]
    rows = np.array(output["data"]).reshape(3, 12)
    for row, key in zip(rows, answer["quantiles"], strict=True):
        np.testing.assert_allclose(row, answer["quantiles"][key], rtol=1e-5, atol=1e-6)


async def test_a_request_without_the_new_fields_is_answered_as_before(
    api_client: httpx.AsyncClient, models_dir: Any
) -> None:
    body = {"series": SERIES, "horizon": 4, "model": "sine_gru"}
    answer = (await api_client.post("/forecast", json=body)).json()
    assert list(answer) == ["forecast", "intervals", "model", "version", "precision"]
    # The graph gets the tensors it always got (a series and its mask), so the same numbers come back.
    expected = onnx_forecast(models_dir, SERIES, 4, "sine_gru", "2")
    np.testing.assert_array_equal(np.float32(answer["forecast"]), expected)
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


# The season length hint, on a forecaster whose graph takes it (tests/season_model.py: its mean is the
# seasonal naive forecast with the hint as lag), and on sine_gru, which takes none.


@pytest.fixture
def season_models(models_dir: Path, tmp_path: Path) -> Path:
    return season_repository(models_dir, tmp_path)


def history(length: int, seed: int) -> list[float]:
    return np.random.default_rng(seed).normal(size=length).round(3).tolist()


HISTORIES = [history(n, seed) for seed, n in enumerate((40, 9, 200, 64))]
SEASONS = [None, 1, 12, MAX_SEASON]


def entry(series: list[float], season: int | None, horizon: int = 16) -> dict[str, Any]:
    return {"series": series, "horizon": horizon} | ({} if season is None else {"season_length": season})


async def test_each_series_hint_reaches_the_graph_alone_listed_or_batched_with_other_hints(
    serve: ServeApp, season_models: Path
) -> None:
    bodies = [entry(h, s) | {"model": SEASONAL_MODEL} for h, s in zip(HISTORIES, SEASONS, strict=True)]
    async with serve(model_dir=season_models) as (_, client):
        alone = [(await client.post("/forecast", json=body)).json() for body in bodies]
        listed = {
            "model": SEASONAL_MODEL,
            "inputs": [entry(h, s) for h, s in zip(HISTORIES, SEASONS, strict=True)],
        }
        many = (await client.post("/forecast", json=listed)).json()["forecasts"]
    async with serve(model_dir=season_models, max_batch_size=4, max_delay_ms=FOREVER_MS) as (app, client):
        answers = await asyncio.gather(*(client.post("/forecast", json=body) for body in bodies))
        together = [answer.json() for answer in answers]
        calls = app.state.metrics.registry.get_sample_value(
            "rnnserve_batch_size_count", {"model": SEASONAL_MODEL}
        )
        assert calls == 1  # the four series, with four different hints, went in one model call
    for series, season, single, in_list, batched in zip(
        HISTORIES, SEASONS, alone, many, together, strict=True
    ):
        assert single["model"] == SEASONAL_MODEL
        np.testing.assert_allclose(
            single["forecast"], expected_forecast(series, season, 16), rtol=0, atol=1e-6
        )
        assert in_list == single and batched == single


async def test_v2_takes_one_season_length_per_row_or_one_for_all(
    serve: ServeApp, season_models: Path
) -> None:
    rows = [h[-9:] for h in HISTORIES]
    series = {"name": "series", "shape": [4, 9], "datatype": "FP64", "data": rows}
    per_row = {"name": "season_length", "shape": [4, 1], "datatype": "INT32", "data": [1, 2, 3, 9]}
    for_all = {"name": "season_length", "shape": [1, 1], "datatype": "INT64", "data": [4]}
    async with serve(model_dir=season_models) as (_, client):
        metadata = (await client.get(f"/v2/models/{SEASONAL_MODEL}")).json()
        plain = (await client.get("/v2/models/sine_gru")).json()
        answers = [
            await client.post(f"/v2/models/{SEASONAL_MODEL}/infer", json={"inputs": [series, hint]})
            for hint in (per_row, for_all)
        ]
        rest = (await client.post("/forecast", json=entry(rows[3], 9) | {"model": SEASONAL_MODEL})).json()
    assert {"name": "season_length", "datatype": "INT32", "shape": [-1, 1]} in metadata["inputs"]
    assert "season_length" not in [tensor["name"] for tensor in plain["inputs"]]
    for answer, seasons in zip(answers, ([1, 2, 3, 9], [4] * 4), strict=True):
        assert answer.status_code == 200, answer.text
        mean = next(o for o in answer.json()["outputs"] if o["name"] == "mean")
        means = np.array(mean["data"]).reshape(mean["shape"])
        for row, season, got in zip(rows, seasons, means, strict=True):
            np.testing.assert_allclose(got, expected_forecast(row, season, 16), rtol=0, atol=1e-6)
    mean = next(o for o in answers[0].json()["outputs"] if o["name"] == "mean")
    np.testing.assert_array_equal(np.array(mean["data"]).reshape(4, 16)[3], rest["forecast"])


@pytest.mark.parametrize(
    ("body", "place", "message"),
    [
        ({"season_length": 0}, "season_length", "is 0; seasonal_naive takes a season length of 1"),
        ({"season_length": MAX_SEASON + 1}, "season_length", f"to {MAX_SEASON} steps"),
        ({"season_length": 12.5}, "season_length", "must be an integer"),
        ({"inputs": [{"season_length": 2}, {"season_length": -4}]}, "inputs[1].season_length", "is -4;"),
    ],
)
async def test_a_bad_season_length_is_a_422_at_its_place_and_a_400_on_v2(
    serve: ServeApp, season_models: Path, body: dict[str, Any], place: str, message: str
) -> None:
    series = HISTORIES[2]
    if "inputs" in body:
        body = {"inputs": [{"series": series, "horizon": 3} | e for e in body["inputs"]]}
    else:
        body = {"series": series, "horizon": 3} | body
    async with serve(model_dir=season_models) as (_, client):
        rest = await client.post("/forecast", json=body | {"model": SEASONAL_MODEL})
        hints = {"name": "season_length", "shape": [3, 1], "datatype": "INT32", "data": [2, 0, 3]}
        tensors = [{"name": "series", "shape": [3, 20], "datatype": "FP64", "data": [series[:20]] * 3}, hints]
        v2 = await client.post(f"/v2/models/{SEASONAL_MODEL}/infer", json={"inputs": tensors})
    assert rest.status_code == 422, rest.text
    (error,) = rest.json()["errors"]
    assert error["loc"] == place and message in error["msg"]
    assert v2.status_code == 400
    assert v2.json()["error"].startswith("season_length[1]: is 0; seasonal_naive takes a season length of 1")


async def test_a_season_length_for_sine_gru_reads_the_same_on_rest_and_v2(
    api_client: httpx.AsyncClient,
) -> None:
    body = {"series": SERIES, "horizon": 3, "season_length": 12, "model": "sine_gru"}
    rest = await api_client.post("/forecast", json=body)
    assert rest.status_code == 422
    assert rest.json()["detail"] == f"season_length: {NO_SEASON}"
    listed = {
        "inputs": [{"series": SERIES, "horizon": 3}, {"series": SERIES, "horizon": 3, "season_length": 7}],
        "model": "sine_gru",
    }
    many = await api_client.post("/forecast", json=listed)
    assert many.status_code == 422 and many.json()["detail"] == f"inputs[1].season_length: {NO_SEASON}"
    tensors = [
        {"name": "series", "shape": [1, len(SERIES)], "datatype": "FP64", "data": SERIES},
        {"name": "season_length", "shape": [1, 1], "datatype": "INT32", "data": [12]},
    ]
    v2 = await api_client.post("/v2/models/sine_gru/infer", json={"inputs": tensors})
    assert v2.status_code == 400
    assert v2.json()["error"] == rest.json()["detail"]


async def test_the_openapi_body_offers_season_length_only_where_a_model_takes_it(
    serve: ServeApp, season_models: Path
) -> None:
    def forecast_fields(spec: dict[str, Any]) -> dict[str, Any]:
        body = spec["paths"]["/forecast"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        return dict(body["oneOf"][0]["properties"])

    async with serve(model_dir=season_models) as (_, client):
        seasonal = forecast_fields((await client.get("/openapi.json")).json())
    metadata = json.loads((newest_version(season_models, "series_gru") / "metadata.json").read_text())
    longest = metadata["config"]["max_season"]
    assert seasonal["season_length"]["maximum"] == max(MAX_SEASON, longest)  # the longest any model takes
    assert SEASONAL_MODEL in seasonal["season_length"]["description"]
    assert "series_gru" in seasonal["season_length"]["description"]
    async with serve(forecast_model="sine_gru", models="") as (_, client):
        plain = forecast_fields((await client.get("/openapi.json")).json())
    assert "season_length" not in plain


async def test_the_committed_forecaster_takes_each_series_hint_alone_or_listed(
    api_client: httpx.AsyncClient,
) -> None:
    """series_gru, the default, as served: a hint per entry of one request gives each entry the answer
    it gets alone, and the hint changes the answer (a season of 7 read as 12 is another forecast)."""
    t = np.arange(140)
    history = (10 + 5 * np.sin(2 * np.pi * t / 7) + 0.02 * t).round(4).tolist()
    hints = [7, 12, None]
    alone = []
    for hint in hints:
        body = {"series": history, "horizon": 14} | ({} if hint is None else {"season_length": hint})
        response = await api_client.post("/forecast", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "series_gru"
        alone.append(response.json()["forecast"])
    listed = {
        "inputs": [
            {"series": history, "horizon": 14} | ({} if h is None else {"season_length": h}) for h in hints
        ]
    }
    many = (await api_client.post("/forecast", json=listed)).json()["forecasts"]
    for one, entry in zip(alone, many, strict=True):
        np.testing.assert_allclose(entry["forecast"], one, rtol=1e-5, atol=1e-5)
    assert not np.allclose(alone[0], alone[1], atol=1e-3)
    truth = 10 + 5 * np.sin(2 * np.pi * np.arange(140, 154) / 7) + 0.02 * np.arange(140, 154)
    assert np.abs(np.array(alone[0]) - truth).mean() < 0.5  # the right season, followed
