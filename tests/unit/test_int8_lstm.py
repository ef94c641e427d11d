"""The fused int8 LSTM (training.int8_lstm): its fixed ranges hold for any batch, checked with ONNX
Runtime's own LSTM operator and on the committed digit_lstm graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from service.repository import newest_version
from service.tasks.digits import PIXEL_RANGE
from training import int8_graph, int8_lstm
from training.export import onnx_session


def test_no_lstm_unit_goes_past_the_held_units() -> None:
    """A unit's value is sigmoid(output gate) · tanh(cell); ONNX Runtime's approximations of both overshoot
    1 a little, and the held units sit where the product peaks: no gate and cell, drawn over the whole
    range and near saturation, gives a value beyond them, and the held units keep it step after step."""
    peaks = int8_lstm.activation_peaks()
    assert 1.0 <= peaks.high < 1.00001 and -1.00001 < peaks.low <= -1.0
    session = int8_lstm.one_unit_lstm()
    rng = np.random.default_rng(0)
    for spread in (40.0, 20.0, 10.0):
        gates = rng.uniform(-spread, spread, 1_000_000).astype(np.float32)
        cells = rng.uniform(-spread, spread, 1_000_000).astype(np.float32)
        values = int8_lstm.unit_values(session, gates, cells)
        assert peaks.low <= values.min() and values.max() <= peaks.high
    near = int8_lstm.every_float(*int8_lstm.CELL_SEARCHED)[::7]
    values = int8_lstm.unit_values(session, np.full_like(near, peaks.gate), near)
    assert values.max() == peaks.high  # reached, so the bound is as tight as it can be
    held = int8_lstm.unit_values(
        int8_lstm.one_unit_lstm(8), np.full(2, peaks.gate), np.array([peaks.cell_high, peaks.cell_low]), 8
    )
    assert (held[:, 0] == peaks.high).all() and (held[:, 1] == peaks.low).all()


def test_stacked_layers_pass_their_held_units_on(models_dir: Path, tmp_path: Path) -> None:
    """digit_lstm's second layer reads the first's sequence, which then keeps its two held units as the
    second layer's input ends; its answers are the same alone and batched with images that drive units
    to saturation."""
    source = newest_version(models_dir, "digit_lstm") / "model.onnx"
    graph = onnx.load(str(source)).graph
    producers = {output: node for node in graph.node for output in node.output}
    lstms = [node.name for node in graph.node if node.op_type == "LSTM"]
    assert int8_lstm.chained_layers(graph, producers) == {lstms[1]: lstms[0]}
    target = tmp_path / "int8.onnx"
    int8_graph.int8_graph(source, target, {"pixels": PIXEL_RANGE})
    built = onnx.load(str(target)).graph.node
    fused = [node for node in built if node.op_type == "DynamicQuantizeLSTM"]
    squeeze = next(node for node in built if node.input[:1] == [fused[0].output[0]])
    assert (squeeze.op_type, fused[1].input[0]) == ("Squeeze", squeeze.output[0])  # the wide sequence
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (48, 28, 28)).astype(np.float32)
    images[:8] = 255.0  # bright, saturated ones
    images[8:16] = 0.0
    images[16:24] = np.where(rng.random((8, 28, 28)) < 0.5, 0.0, 255.0)
    session = onnx_session(target, threads=1)
    batched = session.run(["probabilities"], {"pixels": images})[0]
    alone = np.concatenate([session.run(["probabilities"], {"pixels": image[None]})[0] for image in images])
    np.testing.assert_array_equal(alone, batched)

    # The fused int8 operator shares the float LSTM's activations: its held units sit at the peaks found.
    model = onnx.load(str(target))
    sequences = [node.output[0] for node in model.graph.node if node.op_type == "DynamicQuantizeLSTM"]
    for name in sequences:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    peaks = int8_lstm.activation_peaks()
    wide = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for sequence in wide.run(sequences, {"pixels": images}):
        assert (sequence[..., -2] == np.float32(peaks.high)).all()
        assert (sequence[..., -1] == np.float32(peaks.low)).all()
        assert np.abs(sequence[..., :-2]).max() <= peaks.high
