"""The season length hint on its own: the forecaster's rule for it, its V2 tensor, and its way through
the queue to the graph, one hint per row, across the model engine's channel too; a forecaster whose
graph takes no hint gets exactly the tensors it always got."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from season_model import MAX_SEASON, SEASONAL_MODEL, expected_forecast, season_repository

from service.config import BatchSettings
from service.engine.protocol import decode_inputs, encode_inputs, pack, unpack
from service.metrics import ServiceMetrics
from service.repository import ModelArtifact, ModelLoadError, locate
from service.runtimes.onnx import OnnxRuntime
from service.series import pad_left, recent_window
from service.tasks.base import Problem
from service.tasks.forecasts import Forecaster

NO_SEASON = (
    "sine_gru takes no season_length; it finds its period itself: leave the field out, or choose a "
    "forecaster whose metadata gives config.max_season (GET /models)"
)


class RecordingRuntime(OnnxRuntime):
    """ONNX Runtime on the model's file, keeping every batch of inputs it was given."""

    def __init__(self, artifact: ModelArtifact) -> None:
        super().__init__(artifact, "cpu", 1)
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feeds.append(dict(inputs))
        return super().run(inputs)


@pytest.fixture(scope="module")
def repository(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return season_repository(models_dir, tmp_path_factory.mktemp("season"))


def loaded(repository: Path, name: str) -> tuple[Forecaster, RecordingRuntime]:
    artifact = locate(repository, name, "onnx")
    runtime = RecordingRuntime(artifact)
    batching = BatchSettings(max_batch_size=8, max_delay_ms=0, max_queue_size=64, queue_timeout_s=10)
    model = Forecaster.load(artifact, runtime, batching, ServiceMetrics().for_batcher(name))
    return model, runtime


@pytest.fixture(scope="module")
def seasonal(repository: Path) -> tuple[Forecaster, RecordingRuntime]:
    return loaded(repository, SEASONAL_MODEL)


@pytest.fixture(scope="module")
def sine_gru(repository: Path) -> tuple[Forecaster, RecordingRuntime]:
    return loaded(repository, "sine_gru")


def history(length: int, seed: int) -> list[float]:
    return np.random.default_rng(seed).normal(size=length).round(3).tolist()


def test_the_rule_takes_1_to_max_season_and_a_model_without_the_input_says_what_to_do(
    seasonal: tuple[Forecaster, RecordingRuntime], sine_gru: tuple[Forecaster, RecordingRuntime]
) -> None:
    model = seasonal[0]
    assert model.max_season == MAX_SEASON
    assert model.season_problem(1) is None and model.season_problem(MAX_SEASON) is None
    for bad in (0, -1, MAX_SEASON + 1):
        assert model.season_problem(bad) == (
            f"is {bad}; seasonal_naive takes a season length of 1 (no seasonality) to {MAX_SEASON} steps: "
            "leave it out and the model finds the period itself"
        )
    assert sine_gru[0].max_season is None
    assert sine_gru[0].season_problem(12) == NO_SEASON
    assert sine_gru[0].declined_inputs() == {"season_length": NO_SEASON}
    assert model.declined_inputs() == {}


def test_the_v2_signature_lists_the_season_only_where_the_graph_takes_it(
    seasonal: tuple[Forecaster, RecordingRuntime], sine_gru: tuple[Forecaster, RecordingRuntime]
) -> None:
    assert [s.name for s in seasonal[0].inputs] == ["series", "horizon", "quantiles", "season_length"]
    spec = seasonal[0].inputs[-1]
    assert (spec.datatype, spec.accepted, spec.shape, spec.optional) == ("INT32", ("INT64",), (-1, 1), True)
    assert [s.name for s in sine_gru[0].inputs] == ["series", "horizon", "quantiles"]


@pytest.mark.parametrize(
    ("season", "problems"),
    [
        ([[3], [24], [1]], []),
        ([[5]], []),
        ([[3], [0], [25]], [("season_length", "is 0;", 1), ("season_length", "is 25;", 2)]),
        ([[0]], [("season_length", "is 0;", None)]),
        ([[3], [4]], [("season_length", "shape is [2, 1]; send [3, 1]", None)]),
        ([[3, 4, 5]], [("season_length", "shape is [1, 3]", None)]),
    ],
)
def test_a_season_tensor_is_one_hint_per_row_or_one_for_all(
    seasonal: tuple[Forecaster, RecordingRuntime],
    season: list[list[int]],
    problems: list[tuple[str, str, int | None]],
) -> None:
    arrays: dict[str, np.ndarray] = {"series": np.ones((3, 30)), "season_length": np.array(season, np.int32)}
    found = seasonal[0].tensor_problems(arrays)
    assert [(p.field, p.item) for p in found] == [(field, item) for field, _, item in problems]
    for problem, (_, text, _) in zip(found, problems, strict=True):
        assert text in problem.msg


def test_a_season_tensor_for_a_model_without_the_input_reads_as_on_rest(
    sine_gru: tuple[Forecaster, RecordingRuntime],
) -> None:
    arrays = {"series": np.ones((2, 30)), "season_length": np.array([[12], [7]], dtype=np.int64)}
    assert sine_gru[0].tensor_problems(arrays) == [Problem("season_length", NO_SEASON)]


def test_each_row_keeps_its_hint_in_one_batch_and_across_the_engine_channel(
    seasonal: tuple[Forecaster, RecordingRuntime],
) -> None:
    model, runtime = seasonal
    histories = [history(n, seed) for seed, n in enumerate((40, 9, 200, 64, 30))]
    seasons = [None, 1, 12, MAX_SEASON, 7]
    items = [model.item(recent_window(np.array(h), 64), s) for h, s in zip(histories, seasons, strict=True)]
    runtime.feeds.clear()
    batched = model.run_batch(items)
    np.testing.assert_array_equal(runtime.feeds[0]["season"], [[0], [1], [12], [24], [7]])
    # The engine's messages carry the items as they are: a worker's items run alike in the engine.
    crossed = decode_inputs(unpack(pack({"kind": "infer", **encode_inputs(items)})))
    for sent, received in zip(items, crossed, strict=True):
        np.testing.assert_array_equal(received, sent)
    in_engine = model.run_batch(crossed)
    for row, (h, season) in enumerate(zip(histories, seasons, strict=True)):
        alone = model.run_batch([items[row]])[0]
        np.testing.assert_array_equal(batched[row], alone)
        np.testing.assert_array_equal(in_engine[row], alone)
        np.testing.assert_allclose(alone[0], expected_forecast(h, season, 16), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(alone[1], np.ones(16))


def test_a_forecaster_without_the_input_gets_exactly_the_tensors_it_always_got(
    sine_gru: tuple[Forecaster, RecordingRuntime],
) -> None:
    model, runtime = sine_gru
    windows = [recent_window(np.array(history(n, n)), model.context_length) for n in (20, 300)]
    items = [model.item(window, None) for window in windows]
    assert all(item is window for item, window in zip(items, windows, strict=True))
    runtime.feeds.clear()
    moments = model.run_batch(items)
    values, mask = pad_left(windows, model.patch_size)
    (feeds,) = runtime.feeds
    assert list(feeds) == ["series", "mask"]
    np.testing.assert_array_equal(feeds["series"], values)
    np.testing.assert_array_equal(feeds["mask"], mask)
    direct = runtime.session.run(["mean", "std"], {"series": values, "mask": mask})
    np.testing.assert_array_equal(np.stack([m[0] for m in moments]), direct[0])
    np.testing.assert_array_equal(np.stack([m[1] for m in moments]), direct[1])


def test_the_metadata_and_the_graph_must_agree_on_the_season_input(repository: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models" / SEASONAL_MODEL / "1"
    folder.mkdir(parents=True)
    (folder / "model.onnx").symlink_to(repository / SEASONAL_MODEL / "1" / "model.onnx")
    metadata = json.loads((repository / SEASONAL_MODEL / "1" / "metadata.json").read_text())
    metadata["inputs"] = [i for i in metadata["inputs"] if i["name"] != "season"]
    (folder / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ModelLoadError, match=re.escape("its metadata.json does not list the input 'season'")):
        loaded(tmp_path / "models", SEASONAL_MODEL)
