"""`python -m training.compare`: its dry run's report, and the digit variants it exported to models/.

The dry run trains every variant on a slice of the real MNIST, in seconds; the variants under models/
come from the full run and are checked as the service would use them: same interface as digit_lstm,
checksums, and accuracy on the real test set against their metadata (tests/process/test_published_variants.py
serves them over HTTP).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from serving import REPO_ROOT

from service.repository import locate
from training.cells import CELL_TYPES, cell_type, recurrent_layer, recurrent_parameters
from training.compare_runs import VARIANTS
from training.export import onnx_session

PUBLISHED = ["digit_rnn", "digit_gru"]


@pytest.fixture(scope="module")
def dry_run(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report folder of one `--dry-run` of every section."""
    report_dir = tmp_path_factory.mktemp("compare")
    command = [sys.executable, "-m", "training.compare", "--dry-run", "--data-dir", str(mnist_dir),
               "--report-dir", str(report_dir), "--threads", "1"]  # fmt: skip
    environment = os.environ | {"OMP_WAIT_POLICY": "PASSIVE"}
    finished = subprocess.run(
        command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=900
    )
    if finished.returncode != 0:
        pytest.fail(f"the dry run exited with {finished.returncode}:\n{finished.stdout}\n{finished.stderr}")
    return report_dir


@pytest.mark.slow  # a training dry run: seconds to tens of seconds of torch
def test_dry_run_reports_every_variant_with_sane_values(dry_run: Path) -> None:
    results = json.loads((dry_run / "results.json").read_text())
    table = (dry_run / "compare.md").read_text()
    digits = results["digits"]["variants"]
    assert set(digits) == set(VARIANTS)
    for name, result in digits.items():
        assert f"| {name} |" in table
        assert 0.0 <= result["test_accuracy"] <= 1.0 and 0.0 <= result["train_accuracy"] <= 1.0
        assert result["parameters"] > result["recurrent_parameters"] > 0
        assert all(s > 0 for s in result["seconds_per_epoch"])
    assert digits["lstm"]["recurrent_parameters"] == 4 * digits["rnn"]["recurrent_parameters"]
    assert digits["gru"]["recurrent_parameters"] == 3 * digits["rnn"]["recurrent_parameters"]
    speed = results["speed"]

    assert all(s > 0 for s in speed["training_step_seconds"].values())
    expected_models = {f"digit_{n}" for n in VARIANTS} | {f"forecast_{c}" for c in CELL_TYPES}
    assert set(speed["onnx_items_per_second"]) == expected_models
    assert set(speed["training_step_seconds"]) == expected_models
    assert all(rate > 0 for rates in speed["onnx_items_per_second"].values() for rate in rates.values())
    forecasts = results["forecast"]["cells"]
    assert set(forecasts) == set(CELL_TYPES)
    for result in forecasts.values():
        assert math.isfinite(result["test_mae"]) and result["test_mae"] > 0
        assert 0.0 <= result["protocol_v1"]["model"]["coverage_95"] <= 1.0
    probe = results["memory"]["results"]
    shortest = min(r["length"] for r in probe)
    for cell in CELL_TYPES:
        first = next(r for r in probe if r["cell"] == cell and r["length"] == shortest)
        assert 0.0 <= first["accuracy"] <= 1.0
        assert table.count(f"| {cell} |") == 4  # the digit, forecast and both memory tables
    assert "## The claims" in table and "LSTM has about 4×" in table
    assert all(
        (dry_run / f"compare_{plot}.png").stat().st_size > 0 for plot in ("digits", "forecast", "memory")
    )


@pytest.mark.slow  # a training dry run: seconds to tens of seconds of torch
def test_dry_run_exports_have_digit_lstm_interface_and_stay_out_of_models(dry_run: Path) -> None:
    reference = json.loads((REPO_ROOT / "models" / "digit_lstm" / "1" / "metadata.json").read_text())
    for name in VARIANTS:
        metadata = json.loads((dry_run / "models" / f"digit_{name}" / "1" / "metadata.json").read_text())
        assert metadata["training"]["dry_run"] is True
        for field in ("task", "inputs", "outputs", "preprocessing"):
            assert metadata[field] == reference[field], (name, field)
    for published in PUBLISHED:
        committed = REPO_ROOT / "models" / published / "1" / "metadata.json"
        assert json.loads(committed.read_text())["training"]["dry_run"] is False


@pytest.mark.parametrize("cell", CELL_TYPES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_the_arithmetic_parameter_count_is_torchs(cell: str, bidirectional: bool) -> None:
    layer = recurrent_layer(cell_type(cell), 28, 128, num_layers=2, bidirectional=bidirectional)
    actual = sum(p.numel() for p in layer.parameters())
    assert recurrent_parameters(cell_type(cell), 28, 128, 2, bidirectional) == actual


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_variant_is_digit_lstm_for_the_service(name: str) -> None:
    """Same task, tensors and preprocessing as digit_lstm; checksums verified as the service does."""
    models = REPO_ROOT / "models"
    reference = json.loads((models / "digit_lstm" / "1" / "metadata.json").read_text())
    for backend in ("onnx", "torchscript"):
        artifact = locate(models, name, backend)  # raises when a checksum does not match
        for field in ("task", "inputs", "outputs", "preprocessing"):
            assert artifact.metadata[field] == reference[field], field
    session = onnx_session(models / name / "1" / "model.onnx")
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("pixels", [28, 28])]
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_variant_accuracy_on_real_mnist_matches_its_metadata(
    name: str, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    metadata = json.loads((REPO_ROOT / "models" / name / "1" / "metadata.json").read_text())
    session = onnx_session(REPO_ROOT / "models" / name / "1" / "model.onnx")
    logits, probabilities = session.run(None, {"pixels": images[:2000].astype(np.float32)})
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (logits.argmax(1) == probabilities.argmax(1)).all()
    accuracy = float((probabilities.argmax(1) == labels[:2000]).mean())
    assert abs(accuracy - metadata["metrics"]["test_accuracy_onnx"]) < 0.01, accuracy
    torch_accuracy = metadata["metrics"]["test_accuracy_eager"]
    assert abs(metadata["metrics"]["test_accuracy_onnx"] - torch_accuracy) < 0.002
