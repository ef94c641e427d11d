"""Several models per task: every model of the repository is served, each behind its own batcher; a
request names one with `"model"` (or `?model=`), gets the task's default otherwise, and a wrong name gets
422 listing the choices."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from conftest import ServeApp


@pytest.fixture
def repository(models_dir: Path, tmp_path: Path) -> Path:
    """The committed models plus `more_digits`, a copy of digit_lstm under another name."""
    copy = tmp_path / "models"
    shutil.copytree(models_dir, copy)
    shutil.copytree(copy / "digit_lstm", copy / "more_digits")
    return copy


async def test_a_request_names_its_model_and_the_answer_names_who_answered(
    serve: ServeApp, repository: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    image = mnist_test_set[0][0].tolist()
    async with serve(model_dir=repository) as (app, client):
        default = (await client.post("/predict/digit", json={"pixels": image})).json()
        named = (await client.post("/predict/digit", json={"pixels": image, "model": "more_digits"})).json()
        octets = await client.post(
            "/predict/digit?model=more_digits",
            content=mnist_test_set[0][:2].tobytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        listed = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
        v2 = (await client.get("/v2/models/more_digits")).json()
        batches = app.state.metrics.registry.get_sample_value(
            "rnnserve_batch_size_count", {"model": "more_digits"}
        )
    assert default["model"] == "digit_lstm" and named["model"] == "more_digits"
    assert named["probabilities"] == default["probabilities"]  # the same weights, so the same answer
    assert [p["model"] for p in octets.json()["predictions"]] == ["more_digits"] * 2
    assert listed["more_digits"]["ready"] and listed["more_digits"]["task"] == "digit-classification"
    assert v2["inputs"][0]["name"] == "pixels"
    assert batches == 2  # its own batcher: the JSON request, then the two images together


async def test_a_wrong_model_gets_422_listing_the_choices(serve: ServeApp, repository: Path) -> None:
    series = np.sin(np.arange(64) / 4).tolist()
    async with serve(model_dir=repository) as (_, client):
        unknown = await client.post("/forecast", json={"series": series, "horizon": 4, "model": "nope"})
        other_task = await client.post(
            "/forecast", json={"series": series, "horizon": 4, "model": "more_digits"}
        )
        both = await client.post(
            "/forecast?model=nope", json={"series": series, "horizon": 4, "model": "sine_gru"}
        )
        chosen = await client.post("/forecast?model=sine_gru", json={"series": series, "horizon": 4})
    for refused in (unknown, other_task):
        assert refused.status_code == 422
        assert "choose one of sine_gru" in refused.json()["detail"]
        assert refused.json()["errors"][0]["loc"] == "model"
    assert both.status_code == 422 and "name one model" in both.json()["detail"]
    assert chosen.status_code == 200 and chosen.json()["model"] == "sine_gru"


async def test_models_restricts_what_is_served(serve: ServeApp, repository: Path) -> None:
    async with serve(model_dir=repository, models="") as (_, client):
        names = [m["name"] for m in (await client.get("/models")).json()["models"]]
        refused = await client.post(
            "/predict/digit", json={"pixels": [[0] * 27 + [255]] * 28, "model": "more_digits"}
        )
    assert sorted(names) == ["digit_lstm", "sine_gru"]
    assert refused.status_code == 422 and "choose one of digit_lstm" in refused.json()["detail"]
