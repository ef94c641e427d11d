"""Several models per task: every model of the repository is served, each behind its own batcher; a
request names one with `"model"` (or `?model=`), gets the task's default otherwise, and a wrong name gets
422 listing the choices."""

from __future__ import annotations

import asyncio
import json
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
        assert "choose one of series_gru, sine_gru" in refused.json()["detail"]
        assert refused.json()["errors"][0]["loc"] == "model"
    assert both.status_code == 422 and "name one model" in both.json()["detail"]
    assert chosen.status_code == 200 and chosen.json()["model"] == "sine_gru"


async def test_a_full_default_model_leaves_the_other_models_of_its_task_open(
    serve: ServeApp, repository: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    image = mnist_test_set[0][0].tolist()
    settings = {
        "max_batch_size": 16,
        "max_delay_ms": 3_600_000.0,
        "max_queue_size": 2,
        "max_inputs_per_request": 2,
    }
    quick = {"more_digits": {"max_delay_ms": 0}}
    async with serve(model_dir=repository, model_batching=quick, **settings) as (app, client):
        waiting = [
            asyncio.ensure_future(client.post("/predict/digit", json={"pixels": image})) for _ in range(2)
        ]
        for _ in range(3000):  # until both wait in digit_lstm's queue
            if (
                app.state.metrics.registry.get_sample_value("rnnserve_queue_depth", {"model": "digit_lstm"})
                == 2
            ):
                break
            await asyncio.sleep(0.01)
        refused = await client.post("/predict/digit", json={"pixels": image})
        other = await client.post("/predict/digit", json={"pixels": image, "model": "more_digits"})
        garbage = await client.post(
            "/predict/digit", content=b"{no", headers={"content-type": "application/json"}
        )
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert other.status_code == 200 and other.json()["model"] == "more_digits"
    assert garbage.status_code == 422  # read, since a model of its task had room
    assert [r.status_code for r in await asyncio.gather(*waiting)] == [503, 503]


async def test_models_restricts_what_is_served(serve: ServeApp, repository: Path) -> None:
    async with serve(model_dir=repository, models="") as (_, client):
        names = [m["name"] for m in (await client.get("/models")).json()["models"]]
        refused = await client.post(
            "/predict/digit", json={"pixels": [[0] * 27 + [255]] * 28, "model": "more_digits"}
        )
    assert sorted(names) == ["digit_lstm", "series_gru"]
    assert refused.status_code == 422 and "choose one of digit_lstm" in refused.json()["detail"]


def committed_models(models_dir: Path, task: str) -> dict[str, float]:
    """Each committed model of `task` with the test accuracy its metadata records."""
    found = {}
    for folder in sorted(models_dir.iterdir()):
        newest = max((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        metadata = json.loads((newest / "metadata.json").read_text())
        if metadata["task"] == task:
            found[folder.name] = float(metadata["metrics"]["test_accuracy_onnx"])
    return found


async def test_every_digit_variant_answers_through_every_route_with_its_measured_accuracy(
    serve: ServeApp, models_dir: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    variants = committed_models(models_dir, "digit-classification")
    assert {"digit_lstm", "digit_rnn", "digit_gru"} <= set(variants)
    images, labels = mnist_test_set[0][:2000], mnist_test_set[1][:2000]
    async with serve() as (_, client):
        for name, measured in variants.items():
            rest = []
            for start in range(0, len(images), 250):
                answer = await client.post(
                    f"/predict/digit?model={name}",
                    content=images[start : start + 250].tobytes(),
                    headers={"Content-Type": "application/octet-stream"},
                )
                assert answer.status_code == 200, answer.text
                rest += [p["digit"] for p in answer.json()["predictions"]]
            tensor = {
                "name": "pixels",
                "shape": [250, 28, 28],
                "datatype": "UINT8",
                "data": images[:250].ravel().tolist(),
            }
            v2 = await client.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]})
            probabilities = np.array(v2.json()["outputs"][1]["data"]).reshape(250, 10)
            accuracy = float(np.mean(np.array(rest) == labels))
            print(f"{name}: {accuracy:.4f} on {len(labels)} test images (metadata: {measured:.4f} on 10,000)")
            assert abs(accuracy - measured) < 0.02
            assert (probabilities.argmax(axis=1) == np.array(rest[:250])).all()
