"""An LSTM layer as ONNX Runtime's fused int8 operator, `com.microsoft.DynamicQuantizeLSTM`, at fixed
scales, so that an answer is the same alone and in any batch.

The operator quantizes its input once per call and its hidden state at every step, each to uint8 over
the range of the whole tensor, every row of the batch together: left as it is, an image's answer would
move with the images batched beside it. Here every such range is the same whatever the batch holds:

- the input gets two more columns, of zero weight, holding the lowest and the highest value it can take
  (a little widened, so that no rounding of the values before it can pass them);
- the hidden state gets two more units, of zero weight in and out, that hold the largest and the smallest
  value any unit can reach: a unit's value is its output gate times the tanh of its cell, and ONNX
  Runtime computes both as rational approximations that overshoot 1 a little (by 1e-7 and 2e-7 on the CPU
  this was written on), so `activation_peaks` finds where they peak by trying every float32 near their
  saturation in ONNX Runtime's float LSTM, whose activations the int8 one shares, and the two units sit
  there (cell kept by a forget gate of exactly 1);
- the layer's outputs drop the two units again, except where the next LSTM layer reads them as its
  input's ends (`chained_layers`).

The weights are quantized per output column to 7 bits, as in the unrolled form (training.int8_graph). The
layer stays one node where the unrolled form has a dozen a step, so a lone image costs less than in the
float graph. The peaks are those of the ONNX Runtime build and CPU that write the graph, where
training.quantize also measures the variant's batch dependence (`auto` serves it only when that is nil); a
CPU whose kernels round the approximations differently could let a unit pass the held ones by a float32
step, and an answer then differ from its batched twin by one rounding step of one hidden value.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.int8_graph import Builder, Quantization, checked, initial_state, quantize_columns

GATE_SEARCHED = (12.0, 32.0)
CELL_SEARCHED = (6.0, 16.0)
"""Where the sigmoid's and the tanh's peaks are looked for: from below where each comes within 1e-5 of 1
(11.5 and 6.1) to past where ONNX Runtime's approximations stop changing (18 and 9)."""
SATURATED = 30.0
"""A gate input at which ONNX Runtime's sigmoid is exactly 1 and a cell at which its tanh is exactly 1."""
RANGE_MARGIN = 1e-6
"""How much an input's range is widened, as a share of its width."""
HELD_STEPS = 64


@dataclass(frozen=True)
class ActivationPeaks:
    """Where an LSTM unit's value, output gate × tanh(cell), is largest and smallest in ONNX Runtime."""

    gate: float
    """The output gate's input at which the sigmoid peaks."""
    cell_high: float
    cell_low: float
    high: float
    """The largest value a unit can take (a hair above 1), at (gate, cell_high)."""
    low: float


def one_unit_lstm(steps: int = 1) -> Any:
    """An ONNX Runtime session of a one-unit LSTM whose output gate's input is X and whose cell is held at
    its initial value c0 (forget gate exactly 1, candidate 0): h = sigmoid(X) · tanh(c0) at every step."""
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    weights = {  # gate order i, o, f, c
        "W": np.array([[[0.0], [1.0], [0.0], [0.0]]], np.float32),
        "R": np.zeros((1, 4, 1), np.float32),
        "B": np.array([[0.0, 0.0, SATURATED, 0.0, 0.0, 0.0, 0.0, 0.0]], np.float32),
    }
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "h0", "c0"], ["Y"], hidden_size=1)
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, [first, "batch", 1])
        for name, first in (("X", steps), ("h0", 1), ("c0", 1))
    ]
    output = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [steps, 1, "batch", 1])
    initializers = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    graph = helper.make_graph([node], "one_unit", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    cpu = ["CPUExecutionProvider"]
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=cpu)


def unit_values(session: Any, gates: np.ndarray, cells: np.ndarray, steps: int = 1) -> np.ndarray:
    """[steps, rows] values of units with output gate inputs `gates` and cells `cells` (one per row)."""
    rows = len(gates)
    feeds = {
        "X": np.broadcast_to(gates.astype(np.float32), (steps, rows))[:, :, None].copy(),
        "h0": np.zeros((1, rows, 1), np.float32),
        "c0": cells.astype(np.float32).reshape(1, rows, 1),
    }
    return np.asarray(session.run(None, feeds)[0]).reshape(steps, rows)


def every_float(low: float, high: float) -> np.ndarray:
    """Every float32 from `low` (included) to `high` (excluded), both positive."""
    bits = np.arange(np.float32(low).view(np.int32), np.float32(high).view(np.int32), dtype=np.int32)
    return bits.view(np.float32)


@functools.cache
def activation_peaks() -> ActivationPeaks:
    """The peaks of this ONNX Runtime's LSTM units, tried at every float32 of GATE_SEARCHED (the output
    gate's input) and CELL_SEARCHED (the cell, either sign); a ValueError when
    its LSTM does not hold a cell still, which the fixed range needs."""
    session = one_unit_lstm()
    best_gate = best_high = best_low = 0.0
    top_gate = top_high = -np.inf
    bottom = np.inf
    for part in np.array_split(every_float(*GATE_SEARCHED), 16):
        values = unit_values(session, part, np.full_like(part, SATURATED))[0]  # sigmoid(part) · 1
        if values.max() > top_gate:
            top_gate, best_gate = float(values.max()), float(part[values.argmax()])
    for part in np.array_split(every_float(*CELL_SEARCHED), 16):
        saturated = np.full_like(part, SATURATED)
        values = unit_values(session, saturated, part)[0]  # 1 · tanh(part)
        if values.max() > top_high:
            top_high, best_high = float(values.max()), float(part[values.argmax()])
        values = unit_values(session, saturated, -part)[0]
        if values.min() < bottom:
            bottom, best_low = float(values.min()), float(-part[values.argmin()])
    held = one_unit_lstm(HELD_STEPS)
    cells = np.array([best_high, best_low], np.float32)
    values = unit_values(held, np.full(2, best_gate, np.float32), cells, HELD_STEPS)
    if not (values == values[:1]).all():
        raise ValueError(
            "this ONNX Runtime's LSTM does not hold a cell still with its forget gate's input at "
            f"{SATURATED}; the fused int8 LSTM's fixed range needs it: use the unrolled form"
        )
    return ActivationPeaks(best_gate, best_high, best_low, float(values[0, 0]), float(values[0, 1]))


def widened(
    node: Any, weights: dict[str, np.ndarray], hidden: int, peaks: ActivationPeaks
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`node`'s W [4(H+2), inputs+2], R [4(H+2), H+2] and B [8(H+2)] with the two extra input columns and
    the two held units (gate order i, o, f, c): zero weights; their output gate at the sigmoid's peak,
    their forget gate at exactly 1 and their candidate at 0, so that their cells never move."""
    w, r = weights[node.input[1]][0], weights[node.input[2]][0]
    bias = weights[node.input[3]][0] if len(node.input) > 3 and node.input[3] else np.zeros(8 * hidden)
    wide = hidden + 2
    w2 = np.zeros((4 * wide, w.shape[1] + 2), np.float32)
    r2 = np.zeros((4 * wide, wide), np.float32)
    b2 = np.zeros((2, 4 * wide), np.float32)
    held_bias = (0.0, peaks.gate, SATURATED, 0.0)
    for gate in range(4):
        rows = slice(gate * wide, gate * wide + hidden)
        given = slice(gate * hidden, (gate + 1) * hidden)
        w2[rows, : w.shape[1]], r2[rows, :hidden] = w[given], r[given]
        b2[0, rows], b2[1, rows] = bias[given], bias[4 * hidden :][given]
        b2[0, gate * wide + hidden : (gate + 1) * wide] = held_bias[gate]
    return w2, r2, b2.ravel()


def fused_lstm(
    node: Any,
    weights: dict[str, np.ndarray],
    input_range: tuple[float, float] | None,
    wanted: set[str],
    chain: tuple[bool, bool] = (False, False),
) -> Builder:
    """The nodes that compute `node` (a forward LSTM of time-major input) as one DynamicQuantizeLSTM at
    fixed scales, with its outputs' names. Its input lies in `input_range`, traced from a graph input
    (training.int8_graph.input_range), or is a layer below's hidden states (None). A traced input's values
    lie on the levels of its range (whole pixel values): the part of a level by which the operator's
    rounded zero point shifts them all is taken off through the bias. Only the outputs in `wanted` (those
    the graph reads) are computed. `chain` says whether the input is a layer below's sequence that still
    holds its two held units (as its last columns: they are the input's ends), and whether this layer's
    sequence keeps them for the layer above (`chained_layers`)."""
    hidden = checked(node)["hidden_size"]
    peaks = activation_peaks()
    graph = Builder(node.name)
    low, high = (peaks.low, peaks.high) if input_range is None else input_range
    margin = RANGE_MARGIN * (high - low)
    low, high = low - margin, high + margin
    w, r, bias = widened(node, weights, hidden, peaks)
    w_levels, w_scales = quantize_columns(w)
    r_levels, r_scales = quantize_columns(r)
    if input_range is not None:
        levels = input_levels(low, high)
        shift = (levels.zero - levels.nearest_zero()) * levels.scale  # a level read back, less its value
        bias[: 4 * (hidden + 2)] -= shift * w_scales * w_levels.sum(axis=0, dtype=np.float64)
    x = wide_x = node.input[0]
    first = graph.op("Slice", [x, *axis_slice(graph, 2, 0, 1)])  # [steps, batch, 1]
    zeros = graph.op("Mul", [first, graph.constant("zero", np.float32(0.0))])
    if not chain[0]:
        ends = graph.op("Add", [zeros, graph.constant("input_ends", np.array([low, high], np.float32))])
        wide_x = graph.op("Concat", [x, ends], axis=2)
    origin = graph.op("Slice", [zeros, *axis_slice(graph, 0, 0, 1)])  # [1, batch, 1] of zeros
    states = []
    for index, held in ((5, (peaks.high, peaks.low)), (6, (peaks.cell_high, peaks.cell_low))):
        units = graph.op("Add", [origin, graph.constant(f"held_{index}", np.array(held, np.float32))])
        states.append(graph.op("Concat", [initial_state(graph, node, index, x, hidden), units], axis=2))
    zero_points = [np.zeros((1, 4 * (hidden + 2)), np.int8)] * 2
    sequence = node.output[0] if chain[1] else f"{node.name}/sequence_held"
    outputs = graph.op(
        "DynamicQuantizeLSTM",
        [
            wide_x,
            graph.constant("W", w_levels[None]),
            graph.constant("R", r_levels[None]),
            graph.constant("B", bias[None]),
            "",
            *states,
            "",
            graph.constant("W_scale", w_scales[None]),
            graph.constant("W_zero_point", zero_points[0]),
            graph.constant("R_scale", r_scales[None]),
            graph.constant("R_zero_point", zero_points[1]),
        ],
        [sequence, f"{node.name}/last_held", f"{node.name}/cell_held"],
        hidden_size=hidden + 2,
    )
    for name, wide, axis in zip(node.output, outputs, (3, 2, 2), strict=False):
        if name in wanted and name != wide:
            graph.op("Slice", [wide, *axis_slice(graph, axis, 0, hidden)], [name])
    return graph


def input_levels(low: float, high: float) -> Quantization:
    """How the operator quantizes an input whose range is [low, high]: over that range stretched to hold
    0, at the scale it computes in float32, to the nearest zero point (Quantization.nearest_zero)."""
    low = min(low, 0.0)
    scale = float(np.float32(Quantization.spanning(low, max(high, 0.0)).scale))
    return Quantization(scale, -low / scale)


def axis_slice(graph: Builder, axis: int, start: int, end: int) -> list[str]:
    """Slice's starts, ends and axes for [start, end) along `axis`."""
    return [
        graph.constant(f"slice_{axis}_{start}_{end}_{name}", np.array([value], np.int64))
        for name, value in (("starts", start), ("ends", end), ("axes", axis))
    ]


def chained_layers(graph: Any, producers: dict[str, Any]) -> dict[str, str]:
    """{LSTM node: the LSTM node below it} for each LSTM whose input is the sequence of the one below and
    nothing else reads that sequence (through Squeeze or Identity nodes read by nothing else either): the
    lower one's sequence can then keep its held units, and the upper one read them as its input's ends."""
    readers = Counter(name for node in graph.node for name in node.input)
    readers.update(output.name for output in graph.output)
    pairs = {}
    for node in graph.node:
        if node.op_type != "LSTM":
            continue
        name, below = node.input[0], producers.get(node.input[0])
        alone = readers[name] == 1
        while below is not None and below.op_type in ("Squeeze", "Identity"):
            name, below = below.input[0], producers.get(below.input[0])
            alone = alone and readers[name] == 1
        if alone and below is not None and below.op_type == "LSTM" and name == below.output[0]:
            pairs[node.name] = below.name
    return pairs
