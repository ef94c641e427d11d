"""The int8 variants of the digit models: a dry run of training.quantize on the committed newest versions
and real MNIST, checked with the service's own repository reader and a real ONNX Runtime session."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from service.precision import MAX_BATCH_DIFFERENCE
from service.repository import locate, newest_version, read_metadata, verify
from service.tasks.digits import PIXEL_RANGE
from training import int8_graph, int8_lstm, quantize
from training.calibrate import DRY_RUN_TEST_IMAGES, expected_calibration_error
from training.export import onnx_session

# The int8 graph may lose at most this much accuracy (in points) against its float graph on the first
# 1,000 test images: 0.3 points is 3 images.
ACCURACY_BOUND_POINTS = 0.3
MIN_ARGMAX_AGREEMENT = 0.99
# The recurrent nodes training.int8_graph computes in integers: LSTMs fused, GRUs unrolled.
QUANTIZED = {"digit_lstm": ["LSTM", "LSTM"], "digit_gru": ["GRU", "GRU"]}
FORMS = {"LSTM": "fused", "GRU": "unrolled", "RNN": "unrolled"}


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
        assert variant["dry_run"] is True and variant["method"].startswith("training.int8_graph: ")
        assert sorted(op["op_type"] for op in variant["quantized_ops"]) == ops
        assert all(op["form"] == FORMS[op["op_type"]] for op in variant["quantized_ops"])
        assert ("lstm_held_units" in variant["settings"]) == (name == "digit_lstm")
        metrics = variant["metrics"]
        assert metrics["test_images"] == DRY_RUN_TEST_IMAGES
        assert metrics["accuracy_drop_points"] <= ACCURACY_BOUND_POINTS, metrics
        assert metrics["argmax_agreement"] >= MIN_ARGMAX_AGREEMENT, metrics
        assert 0 < metrics["max_probability_difference"] < 0.5  # changed, but still close
        for timing in ("batch1", "batch1_fp32", "batch64", "batch64_fp32"):
            assert metrics[f"cpu_us_per_image_{timing}"] > 0, timing
        assert metrics["batch_max_probability_difference"] <= MAX_BATCH_DIFFERENCE
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

    # Each LSTM layer is one fused integer node; each GRU layer one integer product per step.
    lstm = out / "digit_lstm" / str(int(newest_version(models_dir, "digit_lstm").name) + 1)
    ops = [n.op_type for n in onnx.load(str(lstm / "model.int8.onnx")).graph.node]
    assert ops.count("DynamicQuantizeLSTM") == 2 and "LSTM" not in ops and "MatMulIntegerToFloat" not in ops
    gru = out / "digit_gru" / str(int(newest_version(models_dir, "digit_gru").name) + 1)
    ops = [n.op_type for n in onnx.load(str(gru / "model.int8.onnx")).graph.node]
    assert ops.count("MatMulIntegerToFloat") == 2 * 28 and "GRU" not in ops and "MatMul" not in ops
    assert json.loads((lstm / "metadata.json").read_text())["onnx_file"] == "model.onnx"  # the float graph


def test_the_temperature_scaling_stays_float(models_dir: Path, tmp_path: Path) -> None:
    """digit_rnn's newest graph computes its temperature from the two largest logits; only the recurrent
    nodes are replaced, so every other node is kept as it was, weights and all."""
    source = newest_version(models_dir, "digit_rnn") / "model.onnx"
    replaced = int8_graph.int8_graph(source, tmp_path / "int8.onnx", {"pixels": PIXEL_RANGE})
    assert [r["op_type"] for r in replaced] == ["RNN", "RNN"]
    before, after = onnx.load(str(source)).graph, onnx.load(str(tmp_path / "int8.onnx")).graph
    kept = {n.name: n for n in after.node}
    old_weights = {i.name: i for i in before.initializer}
    new_weights = {i.name: i for i in after.initializer}
    for node in before.node:
        if node.op_type == "RNN":
            assert node.name not in kept
            continue
        assert kept[node.name] == node, node.name
        for name in node.input:
            if name in old_weights:
                assert new_weights[name] == old_weights[name], name
    assert {"top_two", "gap", "divide_by_temperature", "/Softmax"} <= set(kept)


def recurrent_graph(op_type: str, hidden: int, steps: int, inputs: int, seed: int) -> onnx.ModelProto:
    """One forward recurrent node of random weights (contracting, as trained ones do, so that rounding
    does not grow from step to step), without initial states, run by ONNX Runtime's own operator:
    X [steps, batch, inputs] -> Y [steps, 1, batch, hidden], Y_h [1, batch, hidden]."""
    from onnx import TensorProto, helper, numpy_helper

    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op_type]
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (1, gates * hidden, inputs)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(0, 0.1, (1, gates * hidden, hidden)).astype(np.float32), "R"),
        numpy_helper.from_array(rng.normal(0, 0.3, (1, 2 * gates * hidden)).astype(np.float32), "B"),
    ]
    extra: dict[str, Any] = {"linear_before_reset": 1} if op_type == "GRU" else {}
    node = helper.make_node(
        op_type, ["X", "W", "R", "B"], ["Y", "Y_h"], name=op_type, hidden_size=hidden, **extra
    )
    outputs = [
        helper.make_tensor_value_info("Y", TensorProto.FLOAT, [steps, 1, "batch", hidden]),
        helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, "batch", hidden]),
    ]
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [steps, "batch", inputs])
    graph = helper.make_graph([node], "recurrent", [x], outputs, weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("op_type", ["LSTM", "GRU", "RNN"])
def test_an_int8_layer_follows_onnx_runtimes_own_and_each_row_is_computed_on_its_own(
    op_type: str, tmp_path: Path
) -> None:
    onnx.save(recurrent_graph(op_type, hidden=32, steps=12, inputs=8, seed=1), str(tmp_path / "float.onnx"))
    # The input and recurrent weights share each output column's scale, so the input's range is one that
    # puts the input weights, read at the hidden state's scale, near the recurrent ones, as a trained
    # model's are: 0.3 × (1/255) / (1/127.5) = 0.15 against 0.1 here; 1.3 times for digit_lstm's pixels.
    replaced = int8_graph.int8_graph(tmp_path / "float.onnx", tmp_path / "int8.onnx", {"X": (-0.5, 0.5)})
    assert replaced == [{"node": op_type, "op_type": op_type, "form": FORMS[op_type]}]
    x = np.random.default_rng(2).normal(0, 0.2, (12, 16, 8)).clip(-0.5, 0.5).astype(np.float32)
    theirs = onnx_session(tmp_path / "float.onnx", threads=1).run(None, {"X": x})
    session = onnx_session(tmp_path / "int8.onnx", threads=1)
    ours = session.run(None, {"X": x})
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.shape == reference.shape
        assert np.abs(mine - reference).max() < 0.05  # 8-bit hidden states, 7-bit weights
        assert np.abs(mine - reference).mean() < 0.01
    assert not np.array_equal(ours[0], theirs[0])  # integer arithmetic, not the float operator
    alone = np.concatenate([session.run(None, {"X": x[:, i : i + 1]})[0] for i in range(16)], axis=2)
    np.testing.assert_array_equal(alone, ours[0])  # the same alone as in the batch, to the bit


def test_a_layer_the_int8_forms_do_not_compute_is_refused_by_name(tmp_path: Path) -> None:
    model = recurrent_graph("LSTM", hidden=8, steps=4, inputs=4, seed=0)
    model.graph.node[0].attribute.append(onnx.helper.make_attribute("direction", "reverse"))
    onnx.save(model, str(tmp_path / "reverse.onnx"))
    with pytest.raises(ValueError, match=r"LSTM: LSTM with direction b'reverse' cannot be quantized here"):
        int8_graph.int8_graph(tmp_path / "reverse.onnx", tmp_path / "int8.onnx", {"X": (-1.0, 1.0)})


def test_an_input_of_unknown_range_is_refused_by_name(tmp_path: Path) -> None:
    onnx.save(recurrent_graph("RNN", hidden=8, steps=4, inputs=4, seed=0), str(tmp_path / "float.onnx"))
    with pytest.raises(
        ValueError, match=r"X: a recurrent layer's input whose range is unknown \(a graph input\)"
    ):
        int8_graph.int8_graph(tmp_path / "float.onnx", tmp_path / "int8.onnx", {"pixels": PIXEL_RANGE})


def test_every_whole_pixel_value_is_one_input_level_through_the_normalization(models_dir: Path) -> None:
    """The first layer's input is (pixels - mean) / std: its range is traced from the pixels' through
    the graph, and its quantization holds each raw pixel value 0-255 exactly (a fractional zero point):
    in the unrolled form, and in the fused LSTM's (training.int8_lstm), whose range is widened by
    RANGE_MARGIN and whose zero point's rounding, the same part of a level for every pixel, the bias takes
    off."""
    model = onnx.load(str(newest_version(models_dir, "digit_lstm") / "model.onnx"))
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    constants = int8_graph.graph_constants(graph)
    lstm = next(node for node in graph.node if node.op_type == "LSTM")
    found = int8_graph.input_quantization(lstm.input[0], producers, constants, {"pixels": PIXEL_RANGE})

    # The float graph's own normalization of every pixel value, and QuantizeLinear at the found scale.
    pixels = np.tile(np.arange(256, dtype=np.float32), (28 * 28 // 256 + 1))[: 28 * 28].reshape(1, 28, 28)
    graph.output.append(onnx.helper.make_tensor_value_info(lstm.input[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = session.run([lstm.input[0]], {"pixels": pixels})[0]
    levels = np.clip(np.round(x / found.scale) + np.round(found.zero), 0, 255)
    np.testing.assert_array_equal(levels, pixels.transpose(1, 0, 2))  # time-major, as the layer reads them
    np.testing.assert_allclose((levels - found.zero) * found.scale, x, atol=1e-5)
    assert int8_graph.input_quantization(lstm.output[0], producers, constants, {}) == int8_graph.HIDDEN

    traced = int8_graph.input_range(lstm.input[0], producers, constants, {"pixels": PIXEL_RANGE})
    assert traced is not None  # the pixels' range, not a layer's hidden states
    margin = int8_lstm.RANGE_MARGIN * (traced[1] - traced[0])
    fused = int8_lstm.input_levels(traced[0] - margin, traced[1] + margin)
    levels = np.clip(np.round(x / fused.scale + fused.nearest_zero()), 0, 255)
    np.testing.assert_array_equal(levels, pixels.transpose(1, 0, 2))
    shift = (fused.zero - fused.nearest_zero()) * fused.scale
    read_back = (levels - fused.nearest_zero()) * fused.scale
    np.testing.assert_allclose(read_back - x, shift, atol=2e-4 * fused.scale * 255)


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
