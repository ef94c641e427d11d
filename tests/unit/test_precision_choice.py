"""Which graph answers (service.precision), on the committed versions' metadata, and the committed int8
variants run again on the full MNIST test set beside their float graphs: the parity their metadata
states."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from service.config import Settings
from service.precision import MAX_ACCURACY_DROP_POINTS, MAX_BATCH_DIFFERENCE, choose, select
from service.repository import ModelLoadError, locate, read_metadata
from training.calibrate import expected_calibration_error
from training.quantize import batch_dependence, probabilities_of

# The versions written by training.quantize: each the float graph of the version before, plus int8.
VARIANTS = {"digit_lstm": "5", "digit_gru": "3", "digit_rnn": "4"}


def metadata_of(models_dir: Path, name: str) -> dict[str, Any]:
    return read_metadata(models_dir / name / VARIANTS[name])


def cpu() -> bool:
    return False


def gpu() -> bool:
    return True


def never() -> bool:
    raise AssertionError("the device does not matter here, so it is not asked")


def meeting_every_rule(metadata: dict[str, Any]) -> dict[str, Any]:
    """`metadata` with an int8 variant whose measurements meet every rule of auto."""
    changed = copy.deepcopy(metadata)
    changed["variants"]["int8"]["metrics"].update(
        accuracy_drop_points=0.0,
        cpu_speedup=2.0,
        cpu_us_per_image_batch1=100.0,
        cpu_us_per_image_batch1_fp32=100.0,
        batch_max_probability_difference=0.0,
    )
    return changed


def test_auto_serves_the_committed_int8_variants_that_are_faster_alone_and_batched(models_dir: Path) -> None:
    """digit_rnn's integer graph is as fast as its float one for a lone image and far faster in batches,
    and so is digit_lstm's fused one (v5); the unrolled GRU costs more than twice the fused float operator
    for a lone image, as did digit_lstm's unrolled v3."""
    for name in ("digit_rnn", "digit_lstm"):
        chosen = choose(metadata_of(models_dir, name), "auto", "onnx", 1, cpu)
        assert (chosen.precision, chosen.file) == ("int8", "model.int8.onnx"), chosen.reason
        assert chosen.reason.startswith("auto on the CPU: int8, "), chosen.reason
    unrolled = [metadata_of(models_dir, "digit_gru"), read_metadata(models_dir / "digit_lstm" / "3")]
    for metadata in unrolled:
        choice = choose(metadata, "auto", "onnx", 1, cpu)
        assert (choice.precision, choice.file) == ("fp32", None)
        assert "the float graph's CPU for a lone image" in choice.reason, choice.reason
        assert " and " not in choice.reason, choice.reason  # no other rule broken
    for name in VARIANTS:
        metadata = metadata_of(models_dir, name)
        assert choose(metadata, "auto", "onnx", 1, gpu).file is None
        more_threads = choose(metadata, "auto", "onnx", 2, cpu)
        assert more_threads.file is None
        assert "measured with 1 ONNX Runtime thread(s) and each model call here gets 2" in more_threads.reason


def test_auto_serves_int8_on_the_cpu_only_when_every_rule_holds(models_dir: Path) -> None:
    good = meeting_every_rule(metadata_of(models_dir, "digit_lstm"))
    chosen = choose(good, "auto", "onnx", 1, cpu)
    assert (chosen.precision, chosen.file) == ("int8", "model.int8.onnx")
    assert chosen.reason.startswith("auto on the CPU: int8, 2.00× less CPU per image")
    assert choose(good, "auto", "onnx", 1, gpu).precision == "fp32"
    assert choose(good, "auto", "onnx", 1, gpu).reason.startswith("auto on a GPU: float")
    assert choose(good, "auto", "torchscript", 1, never).precision == "fp32"

    def breaking(**metrics: Any) -> str:
        bad = copy.deepcopy(good)
        bad["variants"]["int8"]["metrics"].update(metrics)
        choice = choose(bad, "auto", "onnx", 1, cpu)
        assert (choice.precision, choice.file) == ("fp32", None)
        return choice.reason

    assert "0.20 point less accurate" in breaking(accuracy_drop_points=MAX_ACCURACY_DROP_POINTS + 0.1)
    assert "0.0100 above" in breaking(test_ece=good["variants"]["int8"]["metrics"]["test_ece_fp32"] + 0.01)
    assert "1.05×" in breaking(cpu_speedup=1.05)
    assert "up to 0.0010" in breaking(batch_max_probability_difference=0.001)
    assert "1.50× the float graph's CPU for a lone image" in breaking(cpu_us_per_image_batch1=150.0)
    assert "no accuracy, calibration, speed and batch" in breaking(cpu_speedup=None)
    dry = copy.deepcopy(good)
    dry["variants"]["int8"]["dry_run"] = True
    assert "dry run" in choose(dry, "auto", "onnx", 1, cpu).reason


def test_the_setting_overrides_auto_and_a_model_without_a_variant_stays_float(models_dir: Path) -> None:
    lstm = metadata_of(models_dir, "digit_lstm")
    assert choose(lstm, "int8", "onnx", 1, never).file == "model.int8.onnx"
    assert choose(meeting_every_rule(lstm), "fp32", "onnx", 1, never).file is None
    plain = read_metadata(models_dir / "series_gru" / "1")
    for wanted in ("auto", "fp32", "int8"):
        choice = choose(plain, wanted, "onnx", 1, never)
        assert (choice.precision, choice.file, choice.reason) == (
            "fp32",
            None,
            "the version has no int8 variant",
        )
    with pytest.raises(ValidationError, match="precision int8 needs the onnx backend"):
        Settings(precision="int8", backend="torchscript")


def test_a_corrupt_int8_graph_is_refused_by_its_checksum(models_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(models_dir / "digit_lstm" / "3", tmp_path / "digit_lstm" / "3")
    artifact = locate(tmp_path, "digit_lstm", "onnx")
    assert select(artifact, "fp32", "onnx", 1, never).file.name == "model.onnx"
    int8 = select(artifact, "int8", "onnx", 1, never)
    assert (int8.file.name, int8.precision, int8.precision_reason) == (
        "model.int8.onnx",
        "int8",
        "RNNSERVE_PRECISION=int8",
    )
    with (tmp_path / "digit_lstm" / "3" / "model.int8.onnx").open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ModelLoadError, match=r"model\.int8\.onnx: sha256 is .* but metadata.json says"):
        select(artifact, "int8", "onnx", 1, never)


@pytest.mark.slow  # three models, float and int8, on 10,000 images: about 15 s
@pytest.mark.parametrize("name", list(VARIANTS))
def test_each_committed_int8_variant_measures_as_its_metadata_says(
    name: str, models_dir: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    """Accuracy within 0.1 point of the float graph on the whole test set, the same digit for at least
    99.5 % of the images, calibration kept, answers free of their batch, and exactly the numbers
    recorded in metadata.json."""
    images, labels = mnist_test_set
    folder = models_dir / name / VARIANTS[name]
    metadata = read_metadata(folder)
    metrics = metadata["variants"]["int8"]["metrics"]
    assert metadata["variants"]["int8"]["dry_run"] is False and metrics["test_images"] == len(labels)
    assert metadata["onnx_file"] == "model.onnx" and metadata["precision"] == "fp32"
    assert (folder / "model.onnx").read_bytes() == (
        models_dir / name / metadata["derived_from"]["version"] / "model.onnx"
    ).read_bytes()

    ours = probabilities_of(folder / "model.int8.onnx", images, threads=1, label="int8")
    theirs = probabilities_of(folder / "model.onnx", images, threads=1, label="fp32")
    accuracy, accuracy_fp32 = (
        float((ours.argmax(1) == labels).mean()),
        float((theirs.argmax(1) == labels).mean()),
    )
    assert (accuracy, accuracy_fp32) == (metrics["test_accuracy"], metrics["test_accuracy_fp32"])
    assert 100 * (accuracy_fp32 - accuracy) <= MAX_ACCURACY_DROP_POINTS
    agreement = float((ours.argmax(1) == theirs.argmax(1)).mean())
    assert agreement == metrics["argmax_agreement"] and agreement >= 0.995
    assert float(np.abs(ours - theirs).max()) == pytest.approx(
        metrics["max_probability_difference"], abs=1e-6
    )
    ece = expected_calibration_error(ours, labels)
    assert ece == pytest.approx(metrics["test_ece"], abs=1e-6)
    assert ece <= expected_calibration_error(theirs, labels) + 0.005
    assert ece <= 0.01  # the calibration target of the float graphs, met by the graph served on CPUs

    # Versions made before the count was recorded were checked on the first 256 images (their
    # measured_on says so).
    checked = images[: metrics.get("batch_check_images", 256)]
    float_difference = batch_dependence(folder / "model.onnx", checked, threads=1)
    assert float_difference <= MAX_BATCH_DIFFERENCE  # float: rounding only
    assert float_difference == pytest.approx(metrics["batch_max_probability_difference_fp32"], abs=1e-7)
    difference = batch_dependence(folder / "model.int8.onnx", checked, threads=1)
    assert difference == metrics["batch_max_probability_difference"] == 0.0  # every row on its own
