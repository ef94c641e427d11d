"""Calibration: the metrics, the fits, and the calibrated digit versions in models/, measured with ONNX
Runtime and TorchScript on the 10,000 real MNIST test images."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from service.repository import locate, read_metadata
from training import calibrate
from training.calibrate import ECE_TARGET, expected_calibration_error, reliability
from training.export import onnx_session
from training.temperature_scaling import (
    GapTemperature,
    apply,
    fit_gap_temperature,
    fit_temperature,
    scaling_of,
    top_two_gap,
)

MODELS = calibrate.DIGIT_MODELS
OLD = "1"
# Each calibrated version in models/ (all made from v1): the method that made it and how many training
# images it was fitted on. The newest version of each model is the one served.
CALIBRATED = {
    ("digit_lstm", "2"): ("temperature scaling", 10_000),
    ("digit_gru", "2"): ("temperature scaling", 10_000),
    ("digit_rnn", "2"): ("temperature scaling", 10_000),
    ("digit_rnn", "3"): ("gap temperature scaling", 60_000),
}
# The newest version of each model, the one served: the float graph of the last calibrated version,
# unchanged, with an int8 graph beside it (training.quantize; a newer int8 graph of the same float one
# makes a new version, as digit_lstm's v4 and v5 did).
NEWEST = {"digit_lstm": "5", "digit_gru": "3", "digit_rnn": "4"}
NEWEST_CALIBRATED = {"digit_lstm": "2", "digit_gru": "2", "digit_rnn": "3"}
PARITY_TOLERANCE = 1e-5


Scores = Callable[[str, str], tuple[np.ndarray, np.ndarray]]


@pytest.fixture(scope="module")
def scores(models_dir: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]) -> Scores:
    """`logits` and `probabilities` of a committed version's ONNX graph for the 10,000 test images, each
    version run once."""
    computed: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

    def of(name: str, version: str) -> tuple[np.ndarray, np.ndarray]:
        if (name, version) not in computed:
            path = models_dir / name / version / "model.onnx"
            computed[name, version] = calibrate.onnx_scores(path, mnist_test_set[0], f"{name} v{version}")
        return computed[name, version]

    return of


def test_ece_of_known_cases() -> None:
    labels = np.array([0, 1, 2, 3])
    confident_and_half_right = np.full((4, 4), 0.1 / 3)
    confident_and_half_right[np.arange(4), [0, 1, 0, 0]] = 0.9  # right on the first two only
    assert expected_calibration_error(confident_and_half_right, labels) == pytest.approx(0.4)
    # Bin (0.6, 2/3]: confidence 0.65, half right; bin (14/15, 1]: confidence 1.0, all right.
    mixed = np.array([[0.65, 0.35], [0.35, 0.65], [1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(mixed, np.array([0, 0, 0, 1])) == pytest.approx(0.5 * 0.15)
    bins = reliability(mixed, np.array([0, 0, 0, 1]))
    assert bins.counts.sum() == 4 and bins.counts[9] == 2 and bins.counts[14] == 2


def test_fit_temperature_recovers_the_temperature_that_made_the_labels() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 3.0, (20_000, 10))
    for temperature in (0.5, 2.0):
        probabilities = torch.softmax(torch.from_numpy(logits / temperature), dim=1).numpy()
        labels = np.array([rng.choice(10, p=p) for p in probabilities])
        assert fit_temperature(logits, labels) == pytest.approx(temperature, rel=0.05)


def test_fit_gap_temperature_recovers_the_parameters_that_made_the_labels() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(0.0, 3.0, (40_000, 10))
    made = GapTemperature(log_temperature=0.3, gap_coefficient=-0.12)
    probabilities = torch.softmax(torch.from_numpy(apply(made, logits)), dim=1).numpy()
    labels = (probabilities.cumsum(axis=1) < rng.random((len(logits), 1))).sum(axis=1)
    log_temperature, gap_coefficient = fit_gap_temperature(logits, labels)
    assert log_temperature == pytest.approx(made.log_temperature, abs=0.05)
    assert gap_coefficient == pytest.approx(made.gap_coefficient, abs=0.02)
    temperatures = made.temperatures(logits)
    assert temperatures.shape == (len(logits), 1) and float(np.ptp(temperatures)) > 0.5  # per input
    np.testing.assert_array_equal(apply(made, logits).argmax(axis=1), logits.argmax(axis=1))
    np.testing.assert_allclose(top_two_gap(np.array([[1.0, 5.0, 2.5], [0.0, -1.0, 0.0]])), [[2.5], [0.0]])


@pytest.mark.parametrize("name", MODELS)
def test_the_newest_version_is_a_calibrated_one_and_every_version_verifies(
    models_dir: Path, name: str
) -> None:
    for backend in ("onnx", "torchscript"):
        assert locate(models_dir, name, backend).version == NEWEST[name]  # checks size and sha256
        for version in [OLD] + [v for (model, v) in CALIBRATED if model == name]:
            assert locate(models_dir, name, backend, version).version == version  # servable when pinned
    assert sorted(int(p.name) for p in (models_dir / name).iterdir()) == list(range(1, int(NEWEST[name]) + 1))
    newest, calibrated = models_dir / name / NEWEST[name], models_dir / name / NEWEST_CALIBRATED[name]
    sources = [read_metadata(newest)["derived_from"]["version"]]  # each version it was copied from
    while sources[-1] != calibrated.name and "derived_from" in read_metadata(models_dir / name / sources[-1]):
        sources.append(read_metadata(models_dir / name / sources[-1])["derived_from"]["version"])
    assert sources[-1] == calibrated.name, sources
    assert read_metadata(newest)["calibration"] == read_metadata(calibrated)["calibration"]
    assert (newest / "model.onnx").read_bytes() == (calibrated / "model.onnx").read_bytes()


@pytest.mark.parametrize(("name", "version"), CALIBRATED)
def test_a_calibrated_version_is_its_source_with_the_scaling_its_metadata_records(
    models_dir: Path, name: str, version: str
) -> None:
    old, new = read_metadata(models_dir / name / OLD), read_metadata(models_dir / name / version)
    for key in ("task", "inputs", "outputs", "config", "preprocessing", "training", "recipe"):
        assert new.get(key) == old.get(key), key
    assert new["calibrated_from"] == {"version": OLD, "files": old["files"]}
    calibration = new["calibration"]
    method, fit_images = CALIBRATED[name, version]
    assert calibration["method"] == method and calibration["dry_run"] is False
    assert "training images" in calibration["fitted_on"] and calibration["fit_images"] == fit_images
    assert new["metrics"]["test_accuracy_onnx"] == old["metrics"]["test_accuracy_onnx"]
    assert new["metrics"]["parity_max_relative_difference"] <= PARITY_TOLERANCE
    # The graph divides the head's output by `temperature` just before the softmax, and holds the
    # parameters metadata.json records.
    graph = onnx.load(str(models_dir / name / version / "model.onnx")).graph
    (divide,) = [node for node in graph.node if node.op_type == "Div" and node.output == ["logits"]]
    assert divide.input[1] == "temperature"
    constants = {c.name: numpy_helper.to_array(c) for c in graph.initializer}
    for parameter, value in scaling_of(calibration).parameters().items():
        assert float(constants[parameter]) == value == calibration[parameter], parameter
    assert [n.input for n in graph.node if n.op_type == "Softmax"] == [["logits"]]


@pytest.mark.parametrize(("name", "version"), CALIBRATED)
def test_calibrated_predictions_are_the_old_ones(
    models_dir: Path, scores: Scores, name: str, version: str, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    old_logits, old_probabilities = scores(name, OLD)
    logits, probabilities = scores(name, version)
    assert len(probabilities) == len(mnist_test_set[1]) == 10_000
    np.testing.assert_array_equal(probabilities.argmax(1), old_probabilities.argmax(1))
    np.testing.assert_array_equal(logits.argmax(1), old_logits.argmax(1))
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    scaling = scaling_of(read_metadata(models_dir / name / version)["calibration"])
    np.testing.assert_allclose(logits, apply(scaling, old_logits), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_the_served_version_meets_the_calibration_target(
    scores: Scores, name: str, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    after = expected_calibration_error(scores(name, NEWEST[name])[1], mnist_test_set[1])
    assert after <= ECE_TARGET, f"{name} v{NEWEST[name]}: ECE {after:.4f} on the test set"


@pytest.mark.parametrize(("name", "version"), CALIBRATED)
def test_calibration_error_on_the_test_set_is_what_metadata_records(
    models_dir: Path, scores: Scores, name: str, version: str, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    labels = mnist_test_set[1]
    before = expected_calibration_error(scores(name, OLD)[1], labels)
    after = expected_calibration_error(scores(name, version)[1], labels)
    assert after < before / 4, f"{name} v{version}: ECE {before:.4f} -> {after:.4f}"
    recorded = read_metadata(models_dir / name / version)["calibration"]
    assert recorded["ece_before"] == pytest.approx(before, abs=1e-6)
    assert recorded["ece_after"] == pytest.approx(after, abs=1e-6)


@pytest.mark.parametrize(("name", "version"), CALIBRATED)
def test_onnx_and_torchscript_of_a_calibrated_version_agree(
    models_dir: Path, name: str, version: str, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    generator = torch.Generator().manual_seed(1)
    pixels = torch.cat(
        [
            torch.from_numpy(mnist_test_set[0][:300].astype(np.float32)),
            torch.rand(20, 28, 28, generator=generator) * 255,
        ]
    )
    session = onnx_session(models_dir / name / version / "model.onnx")
    scripted = torch.jit.load(str(models_dir / name / version / "model.pt"), map_location="cpu")
    with torch.no_grad():
        script_outputs = [t.numpy() for t in scripted(pixels)]
    onnx_outputs = session.run(["logits", "probabilities"], {"pixels": pixels.numpy()})
    for from_onnx, from_script in zip(onnx_outputs, script_outputs, strict=True):
        scale = max(1.0, float(np.abs(from_onnx).max()))
        assert float(np.abs(from_onnx - from_script).max()) / scale <= PARITY_TOLERANCE


@pytest.mark.slow  # two calibration dry runs: seconds of torch
def test_calibrate_dry_run_writes_a_checked_version_elsewhere(
    tmp_path: Path, models_dir: Path, mnist_dir: Path
) -> None:
    source = tmp_path / "models"
    shutil.copytree(models_dir / "digit_rnn" / OLD, source / "digit_rnn" / OLD)
    out, plot = tmp_path / "out", tmp_path / "reliability.png"
    data, rnn_only = ["--data-dir", str(mnist_dir)], ["--models", "digit_rnn"]
    calibrate.main(
        ["--dry-run", *data, "--model-dir", str(source), *rnn_only, "--out", str(out), "--plot", str(plot)]
    )
    assert sorted(p.name for p in (source / "digit_rnn").iterdir()) == [OLD]  # the source is untouched
    artifact = locate(out, "digit_rnn", "torchscript")  # verifies the checksums
    assert artifact.version == "2"
    metadata = json.loads((out / "digit_rnn" / "2" / "metadata.json").read_text())
    assert metadata["command"].startswith("python -m training.calibrate --dry-run")
    calibration = metadata["calibration"]
    assert calibration["dry_run"] is True and calibration["fit_images"] == calibrate.DRY_RUN_FIT_IMAGES
    assert calibration["nll_after"] < calibration["nll_before"] and calibration["temperature"] > 0
    assert metadata["metrics"]["test_images"] == calibrate.DRY_RUN_TEST_IMAGES
    assert plot.stat().st_size > 10_000

    with pytest.raises(SystemExit, match="writes nothing into --model-dir"):
        calibrate.main(
            ["--dry-run", *data, "--model-dir", str(source), *rnn_only, "--out", str(source / "x")]
        )
    # With the calibrated version beside v1, the newest is calibrated: v1 is named to calibrate it again.
    shutil.copytree(out / "digit_rnn" / "2", source / "digit_rnn" / "2")
    with pytest.raises(SystemExit, match="already calibrated"):
        calibrate.main(["--dry-run", *data, "--model-dir", str(source), *rnn_only])
    with pytest.raises(SystemExit, match=r"holds no metadata\.json"):
        calibrate.main(["--dry-run", *data, "--model-dir", str(source), *rnn_only, "--from-version", "7"])
    gap, pinned = tmp_path / "gap", ["--from-version", OLD, "--method", "gap-temperature"]
    calibrate.main(["--dry-run", *data, "--model-dir", str(source), *rnn_only, "--out", str(gap), *pinned])
    assert locate(gap, "digit_rnn", "onnx").version == "3"
    metadata = json.loads((gap / "digit_rnn" / "3" / "metadata.json").read_text())
    assert metadata["calibrated_from"]["version"] == OLD
    calibration = metadata["calibration"]
    assert calibration["method"] == "gap temperature scaling" and calibration["dry_run"] is True
    assert calibration["fit_nll_after"] < calibration["fit_nll_before"]
    assert {"log_temperature", "gap_coefficient"} <= set(calibration) and "temperature" not in calibration
