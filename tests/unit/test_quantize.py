"""The int8 variants of the digit models: a dry run of training.quantize on the committed newest versions
and real MNIST, checked with the service's own repository reader and a real ONNX Runtime session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from service.repository import locate, newest_version, read_metadata, verify
from training import quantize
from training.calibrate import DRY_RUN_TEST_IMAGES, expected_calibration_error
from training.export import onnx_session

# The int8 graph may lose at most this much accuracy (in points) against its float graph on the first
# 1,000 test images: 0.3 points is 3 images.
ACCURACY_BOUND_POINTS = 0.3
MIN_ARGMAX_AGREEMENT = 0.99
# Which weighted nodes ONNX Runtime's dynamic quantization turns into integer ones: LSTM and the Gemm
# head, not GRU.
QUANTIZED = {"digit_lstm": ["Gemm", "LSTM", "LSTM"], "digit_gru": ["Gemm"]}


@pytest.mark.slow  # two models, each quantized twice and measured: about 10 s
def test_dry_run_writes_a_verified_version_with_a_measured_int8_variant(
    tmp_path: Path, models_dir: Path, mnist_dir: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    out = tmp_path / "repository"
    argv = ["--dry-run", "--data-dir", str(mnist_dir), "--model-dir", str(models_dir), "--out", str(out)]
    quantize.main([*argv, "--models", ",".join(QUANTIZED)])

    for name, ops in QUANTIZED.items():
        source = newest_version(models_dir, name)
        artifact = locate(out, name, "onnx")  # the service's reader: size and sha256 of model.onnx
        assert artifact.version == str(int(source.name) + 1)
        assert artifact.file.read_bytes() == (source / "model.onnx").read_bytes()  # float file unchanged
        assert locate(out, name, "torchscript").file.read_bytes() == (source / "model.pt").read_bytes()
        assert sorted(p.name for p in artifact.directory.iterdir()) == [
            "metadata.json",
            "model.int8.onnx",
            "model.onnx",
            "model.pt",
        ]
        metadata, old = artifact.metadata, read_metadata(source)
        assert set(metadata["files"]) == {"model.onnx", "model.pt", "model.int8.onnx"}
        for filename, record in metadata["files"].items():
            verify(artifact.directory / filename, record)
        assert metadata["version"] == artifact.version and metadata["precision"] == "fp32"
        assert metadata["derived_from"] == {"version": source.name, "files": old["files"]}
        for key in ("task", "inputs", "outputs", "config", "preprocessing", "metrics", "calibration"):
            assert metadata[key] == old[key], key
        assert metadata["command"].startswith("python -m training.quantize --dry-run")

        variant = metadata["variants"]["int8"]
        assert variant["onnx_file"] == "model.int8.onnx" and variant["precision"] == "int8"
        assert variant["dry_run"] is True and "quantize_dynamic" in variant["method"]
        assert sorted(op["op_type"] for op in variant["quantized_ops"]) == ops
        metrics = variant["metrics"]
        assert metrics["test_images"] == DRY_RUN_TEST_IMAGES
        assert metrics["accuracy_drop_points"] <= ACCURACY_BOUND_POINTS, metrics
        assert metrics["argmax_agreement"] >= MIN_ARGMAX_AGREEMENT, metrics
        assert 0 < metrics["max_probability_difference"] < 0.5  # changed, but still close
        assert metrics["cpu_us_per_image_batch64"] > 0 and metrics["cpu_us_per_image_batch64_fp32"] > 0
        assert metrics["onnx_bytes"] == metadata["files"]["model.int8.onnx"]["bytes"]

        # The recorded numbers are those of the written file, run again here on the same images.
        images, labels = mnist_test_set[0][:DRY_RUN_TEST_IMAGES], mnist_test_set[1][:DRY_RUN_TEST_IMAGES]
        pixels = images.astype(np.float32)
        int8 = onnx_session(artifact.directory / "model.int8.onnx", threads=1)
        float32 = onnx_session(artifact.file, threads=1)
        ours = int8.run(["probabilities"], {"pixels": pixels})[0]
        theirs = float32.run(["probabilities"], {"pixels": pixels})[0]
        assert float((ours.argmax(1) == labels).mean()) == pytest.approx(metrics["test_accuracy"])
        assert float((theirs.argmax(1) == labels).mean()) == pytest.approx(metrics["test_accuracy_fp32"])
        assert expected_calibration_error(ours, labels) == pytest.approx(metrics["test_ece"], abs=1e-6)
        np.testing.assert_allclose(ours.sum(axis=1), 1.0, atol=1e-5)

    # The LSTM's weights are stored as int8: its graph holds integer LSTM nodes and is much smaller.
    lstm = out / "digit_lstm" / str(int(newest_version(models_dir, "digit_lstm").name) + 1)
    graph = onnx.load(str(lstm / "model.int8.onnx")).graph
    assert [n.op_type for n in graph.node].count("DynamicQuantizeLSTM") == 2
    assert (lstm / "model.int8.onnx").stat().st_size < 0.4 * (lstm / "model.onnx").stat().st_size
    assert json.loads((lstm / "metadata.json").read_text())["onnx_file"] == "model.onnx"  # float is served


def test_the_temperature_scaling_stays_float(models_dir: Path, tmp_path: Path) -> None:
    """digit_rnn's newest graph computes its temperature from the two largest logits with a MatMul;
    quantizing that would move every confidence, so only the network's own nodes are quantized."""
    source = newest_version(models_dir, "digit_rnn") / "model.onnx"
    excluded = quantize.scaling_nodes(onnx.load(str(source)))
    assert {"top_two", "gap", "divide_by_temperature", "/Softmax"} <= set(excluded)
    assert not any(name.startswith("/network/") for name in excluded)
    quantize.quantize(source, tmp_path / "int8.onnx", per_channel=True)
    replaced, left_float = quantize.quantized_ops(source, tmp_path / "int8.onnx")
    assert replaced == [{"node": "/network/head/Gemm", "op_type": "Gemm"}]
    assert {"node": "gap", "op_type": "MatMul"} in left_float
    assert {op["op_type"] for op in left_float} == {"RNN", "MatMul"}


def test_dry_run_refuses_to_write_into_the_model_repository(models_dir: Path, mnist_dir: Path) -> None:
    with pytest.raises(SystemExit, match="writes nothing into --model-dir"):
        quantize.main(
            [
                "--dry-run",
                "--data-dir",
                str(mnist_dir),
                "--model-dir",
                str(models_dir),
                "--out",
                str(models_dir),
            ]
        )
