"""int8 graphs of the digit classifiers whose answers do not depend on their batch.

ONNX Runtime's dynamic quantization (`quantize_dynamic`) scales each call's activations by the range of
the whole batch, so an image's probabilities move with the images batched beside it (by up to 0.006
for `digit_lstm` on MNIST), and it has no integer GRU or RNN. Here each LSTM node of a float graph becomes
ONNX Runtime's fused int8 LSTM with every range held fixed (training.int8_lstm), and each GRU or RNN node
is unrolled over its (fixed) number of steps, with one integer matrix product per step at fixed scales:

- the hidden state lies in (-1, 1) (it is a tanh, or a sigmoid times a tanh), so it is quantized to
  uint8 with the fixed scale 1/127.5 and zero point 128, whatever the batch holds;
- the layer's input is quantized once for all steps: a layer below's hidden states as above, the first
  layer's input over the range it can take, traced from the graph input's (for the digit models, raw
  pixels 0–255 through the graph's normalization: every whole pixel value is one level, exactly);
- each step's input and hidden state are concatenated and multiplied by the input and recurrent weights
  stacked, quantized per output column to 7 bits (-63…63), so that no CPU kernel saturates its 16-bit
  pair sums (255 · 63 · 2 < 2^15, the reason for ONNX Runtime's `reduce_range`); the input rows are
  rescaled to the hidden state's scale and the difference of the zero points goes into the bias (the
  input rows share each column's scale with the recurrent rows: precise while the input weights, read at
  the hidden state's scale, are of the recurrent weights' size, as in the digit models: 1.3 times for
  digit_lstm's first layer; training.quantize measures accuracy and agreement either way);
- the gates' nonlinearities, the head and the temperature scaling stay float.

Each product is ONNX Runtime's `com.microsoft.MatMulIntegerToFloat`, and every row of a batch is
computed on its own: an answer is the same alone and in any batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WEIGHT_LEVELS = 63
RECURRENT = ("LSTM", "GRU", "RNN")
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": [b"Sigmoid", b"Tanh", b"Tanh"], "GRU": [b"Sigmoid", b"Tanh"], "RNN": [b"Tanh"]}
SHAPE_ONLY = ("Squeeze", "Unsqueeze", "Transpose", "Reshape", "Identity")
AFFINE = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
}
"""The operations by a constant through which a recurrent layer's input range is traced."""
MICROSOFT = "com.microsoft"
MICROSOFT_OPS = ("MatMulIntegerToFloat", "DynamicQuantizeLSTM")


@dataclass(frozen=True)
class Quantization:
    """uint8 levels q that stand for the values (q - zero) · scale. `zero` may lie between two levels:
    QuantizeLinear adds the nearest one, and the bias makes up the rest."""

    scale: float
    zero: float

    @classmethod
    def spanning(cls, low: float, high: float) -> Quantization:
        """The 256 levels from `low` to `high`."""
        if not np.isfinite([low, high]).all() or not high > low:
            raise ValueError(
                f"cannot quantize the range [{low}, {high}]: give a finite range with high > low"
            )
        scale = (high - low) / 255
        return cls(scale, -low / scale)

    def nearest_zero(self) -> float:
        """The zero point a uint8 quantizer uses: the level nearest `zero`."""
        return float(np.clip(np.round(self.zero), 0, 255))

    def constants(self, graph: Builder, name: str) -> list[str]:
        """QuantizeLinear's scale and (nearest) zero point, as initializers of `graph`."""
        zero = np.uint8(self.nearest_zero())
        return [graph.constant(f"{name}_scale", np.float32(self.scale)), graph.constant(f"{name}_zero", zero)]


HIDDEN = Quantization(1 / 127.5, 128.0)
"""A hidden state, in (-1, 1), whatever the batch holds."""


def quantize_columns(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`weights` (outputs × inputs) as int8 (inputs × outputs) and one float scale per output."""
    scale = np.abs(weights).max(axis=1) / WEIGHT_LEVELS
    scale[scale == 0] = 1.0
    levels = np.clip(np.round(weights / scale[:, None]), -WEIGHT_LEVELS, WEIGHT_LEVELS)
    return levels.astype(np.int8).T.copy(), scale.astype(np.float32)


@dataclass
class Builder:
    """The nodes and initializers of one unrolled layer, named after its node."""

    prefix: str
    nodes: list[Any] = field(default_factory=list)
    initializers: list[Any] = field(default_factory=list)

    def constant(self, name: str, value: Any) -> str:
        """An initializer of this layer, added once under `name`."""
        from onnx import numpy_helper

        full = f"{self.prefix}/{name}"
        if all(i.name != full for i in self.initializers):
            self.initializers.append(numpy_helper.from_array(np.asarray(value), full))
        return full

    def op(self, op_type: str, inputs: list[str], outputs: int | list[str] = 1, **attributes: Any) -> Any:
        """Add a node; its output name, or its output names when `outputs` asks for several."""
        from onnx import helper

        base = f"{self.prefix}/{op_type}_{len(self.nodes)}"
        names = outputs if isinstance(outputs, list) else [f"{base}:{i}" for i in range(outputs)]
        domain = MICROSOFT if op_type in MICROSOFT_OPS else ""
        self.nodes.append(helper.make_node(op_type, inputs, names, name=base, domain=domain, **attributes))
        return names[0] if outputs == 1 else names


def checked(node: Any) -> dict[str, Any]:
    """The node's attributes, refusing what the unrolled form does not compute."""
    from onnx import helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    direction = attributes.get("direction", b"forward")
    unsupported = [
        (direction not in (b"forward", "forward"), f"direction {direction!r}"),
        ("clip" in attributes, "clip"),
        (
            attributes.get("activations", DEFAULT_ACTIVATIONS[node.op_type])
            != DEFAULT_ACTIVATIONS[node.op_type],
            f"activations {attributes.get('activations')}",
        ),
        (attributes.get("layout", 0) != 0, "layout 1"),
        (attributes.get("input_forget", 0) != 0, "input_forget"),
        (node.op_type == "GRU" and attributes.get("linear_before_reset", 0) != 1, "linear_before_reset 0"),
        (len(node.input) > 4 and node.input[4] != "", "sequence_lens"),
        (len(node.input) > 7 and node.input[7] != "", "peepholes"),
    ]
    found = [what for bad, what in unsupported if bad]
    if found:
        raise ValueError(f"{node.name}: {node.op_type} with {', '.join(found)} cannot be quantized here")
    return attributes


def stacked_weights(
    node: Any, weights: dict[str, np.ndarray], hidden: int, source: Quantization
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`node`'s input and recurrent weights stacked for the product of [input, hidden state] (both uint8,
    taken at the hidden state's scale and zero point): int8 levels (inputs + hidden) × outputs, a float
    scale per output, and the bias. A GRU's outputs are z and r (summed), then its input's and its hidden
    state's candidate parts apart, since its reset gate multiplies only the latter."""
    gates = GATES[node.op_type]
    w, r = weights[node.input[1]][0].astype(np.float64), weights[node.input[2]][0].astype(np.float64)
    both = (
        weights[node.input[3]][0] if len(node.input) > 3 and node.input[3] else np.zeros(2 * gates * hidden)
    )
    input_bias, hidden_bias = (
        both[: gates * hidden].astype(np.float64),
        both[gates * hidden :].astype(np.float64),
    )
    w = w * (source.scale / HIDDEN.scale)  # the input's levels read at the hidden state's scale
    if node.op_type == "GRU":
        two = 2 * hidden
        matrix = np.block(
            [[w[:two], r[:two]], [w[two:], np.zeros_like(r[two:])], [np.zeros_like(w[two:]), r[two:]]]
        )
        bias = np.concatenate([input_bias[:two] + hidden_bias[:two], input_bias[two:], hidden_bias[two:]])
    else:
        matrix, bias = np.concatenate([w, r], axis=1), input_bias + hidden_bias
    levels, scales = quantize_columns(matrix)
    # The product takes the hidden state's zero point off the input's levels too: add back the rest.
    inputs = w.shape[1]
    shift = (
        (HIDDEN.zero - source.zero) * HIDDEN.scale * scales * levels[:inputs].sum(axis=0, dtype=np.float64)
    )
    return levels, scales, (bias + shift).astype(np.float32)


def unroll(node: Any, weights: dict[str, np.ndarray], steps: int, source: Quantization) -> Builder:
    """The nodes that compute `node` (a forward LSTM, GRU or RNN of time-major input, quantized as `source`
    says) step by step, with its outputs' names: one integer product per step."""
    hidden = checked(node)["hidden_size"]
    graph = Builder(node.name)
    levels, scales, bias = stacked_weights(node, weights, hidden, source)
    hidden_scale, hidden_zero = HIDDEN.constants(graph, "hidden")
    product = [
        graph.constant("weights", levels),
        hidden_scale,
        graph.constant("weight_scales", scales),
        hidden_zero,
        "",
        graph.constant("bias", bias),
    ]
    x = node.input[0]
    inputs = graph.op("QuantizeLinear", [x, *source.constants(graph, "input")])
    each = graph.op("Split", [inputs], steps, axis=0)  # steps × [1, batch, inputs], uint8
    outputs = list(node.output) + [""] * (3 - len(node.output))
    h = initial_state(graph, node, 5, x, hidden)
    c = initial_state(graph, node, 6, x, hidden) if node.op_type == "LSTM" else ""
    states = []
    for t in range(steps):
        quantized = graph.op("QuantizeLinear", [h, hidden_scale, hidden_zero])
        both = graph.op("Concat", [each[t], quantized], axis=2)
        gates = graph.op("MatMulIntegerToFloat", [both, *product])
        if node.op_type == "LSTM":
            h, c = lstm_step(graph, gates, c, hidden)
        elif node.op_type == "GRU":
            h = gru_step(graph, gates, h, hidden)
        else:
            h = graph.op("Tanh", [gates])
        states.append(h)
    if outputs[0]:
        sequence = graph.op("Concat", states, axis=0)  # [steps, batch, hidden]
        graph.op("Unsqueeze", [sequence, graph.constant("axis_1", np.array([1], np.int64))], [outputs[0]])
    if outputs[1]:
        graph.op("Identity", [h], [outputs[1]])
    if outputs[2]:
        graph.op("Identity", [c], [outputs[2]])
    return graph


def initial_state(graph: Builder, node: Any, index: int, x: str, hidden: int) -> str:
    """The node's initial hidden (5) or cell (6) state, [1, batch, hidden]: its input, else zeros."""
    if len(node.input) > index and node.input[index]:
        return str(node.input[index])
    batch = graph.op("Shape", [x], start=1, end=2)
    one, size = (
        graph.constant("one", np.array([1], np.int64)),
        graph.constant("hidden", np.array([hidden], np.int64)),
    )
    return graph.op("ConstantOfShape", [graph.op("Concat", [one, batch, size], axis=0)])


def lstm_step(graph: Builder, gates: str, c: str, hidden: int) -> tuple[str, str]:
    """One LSTM step from its gates' sum (ONNX gate order i, o, f, c): the new hidden and cell states."""
    sizes = graph.constant("split_3_1", np.array([3 * hidden, hidden], np.int64))
    sigmoid_part, candidate_part = graph.op("Split", [gates, sizes], 2, axis=2)
    i, o, f = graph.op("Split", [graph.op("Sigmoid", [sigmoid_part])], 3, axis=2)
    cell = graph.op(
        "Add", [graph.op("Mul", [f, c]), graph.op("Mul", [i, graph.op("Tanh", [candidate_part])])]
    )
    return graph.op("Mul", [o, graph.op("Tanh", [cell])]), cell


def gru_step(graph: Builder, product: str, h: str, hidden: int) -> str:
    """One GRU step (ONNX gate order z, r, h; the reset gate applied after the recurrent product) from
    stacked_weights' product: z and r summed, then the input's and the hidden state's candidate parts."""
    sizes = graph.constant("split_2_1_1", np.array([2 * hidden, hidden, hidden], np.int64))
    zr, x_n, h_n = graph.op("Split", [product, sizes], 3, axis=2)
    z, r = graph.op("Split", [graph.op("Sigmoid", [zr])], 2, axis=2)
    n = graph.op("Tanh", [graph.op("Add", [x_n, graph.op("Mul", [r, h_n])])])
    return graph.op("Add", [n, graph.op("Mul", [z, graph.op("Sub", [h, n])])])


def input_quantization(
    name: str,
    producers: dict[str, Any],
    constants: dict[str, np.ndarray],
    ranges: dict[str, tuple[float, float]],
) -> Quantization:
    """How a recurrent layer's input `name` is quantized: as a hidden state when it is another recurrent
    node's hidden states (its output 0 or 1, through shape-only nodes), else over the range traced back
    to a graph input of a range in `ranges`, through shape-only nodes and operations by a constant."""
    found = input_range(name, producers, constants, ranges)
    return HIDDEN if found is None else Quantization.spanning(*found)


def input_range(
    name: str,
    producers: dict[str, Any],
    constants: dict[str, np.ndarray],
    ranges: dict[str, tuple[float, float]],
) -> tuple[float, float] | None:
    """The range of a recurrent layer's input `name` (input_quantization): None for another recurrent
    node's hidden states."""
    node = producers.get(name)
    while node is not None and node.op_type in SHAPE_ONLY:
        name, node = node.input[0], producers.get(node.input[0])
    if node is not None and node.op_type in RECURRENT and name in node.output[:2]:
        return None
    return traced_range(name, producers, constants, ranges)


def traced_range(
    name: str,
    producers: dict[str, Any],
    constants: dict[str, np.ndarray],
    ranges: dict[str, tuple[float, float]],
) -> tuple[float, float]:
    """The smallest and largest value tensor `name` can hold, from a graph input's range in `ranges`."""
    if name in ranges:
        return ranges[name]
    node = producers.get(name)
    if node is not None and node.op_type in SHAPE_ONLY:
        return traced_range(node.input[0], producers, constants, ranges)
    by = constants.get(node.input[1]) if node is not None and len(node.input) == 2 else None
    if node is None or node.op_type not in AFFINE or by is None or by.size != 1:
        found = f"computed by {node.op_type} ({node.name})" if node is not None else "a graph input"
        raise ValueError(
            f"{name}: a recurrent layer's input whose range is unknown ({found}); its range is traced from "
            f"a graph input's (given: {sorted(ranges) or 'none'}) through shape changes and adding, "
            "subtracting, multiplying or dividing by a constant"
        )
    ends = AFFINE[node.op_type](
        np.array(traced_range(node.input[0], producers, constants, ranges)), by.item()
    )
    return float(ends.min()), float(ends.max())


def graph_constants(graph: Any) -> dict[str, np.ndarray]:
    """The values of the graph's initializers and Constant nodes, by name."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def int8_graph(
    source: Path, target: Path, input_ranges: dict[str, tuple[float, float]]
) -> list[dict[str, str]]:
    """Write `source`'s graph with every recurrent node computed in integers (above) to `target`; the
    nodes replaced, each as {node, op_type, form}: "fused" (LSTM) or "unrolled" (GRU, RNN).
    `input_ranges` gives the range of the graph's inputs (e.g. {"pixels": (0, 255)}), from which the first
    recurrent layer's input range is traced."""
    import onnx

    from training.int8_lstm import chained_layers, fused_lstm  # it builds on this module

    model = onnx.shape_inference.infer_shapes(onnx.load(str(source)))
    graph = model.graph
    weights = graph_constants(graph)
    described = [*graph.input, *graph.value_info, *graph.output]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in described}
    producers = {output: node for node in graph.node for output in node.output}
    nodes, replaced, used = [], [], set()
    chained = chained_layers(graph, producers)
    wanted = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type not in RECURRENT:
            nodes.append(node)
            continue
        checked(node)
        if node.op_type == "LSTM":
            found = input_range(node.input[0], producers, weights, input_ranges)
            chain = (node.name in chained, node.name in chained.values())
            built, form = fused_lstm(node, weights, found, wanted, chain), "fused"
        else:
            steps = shapes.get(node.input[0], [0])[0]
            if not steps:
                raise ValueError(
                    f"{node.name}: its input's number of steps is not fixed, so it cannot be unrolled"
                )
            quantization = input_quantization(node.input[0], producers, weights, input_ranges)
            built, form = unroll(node, weights, steps, quantization), "unrolled"
        nodes += built.nodes
        graph.initializer.extend(built.initializers)
        used.update(node.input[1:4])
        replaced.append({"node": node.name, "op_type": node.op_type, "form": form})
    kept = [i for i in graph.initializer if i.name not in used or any(i.name in n.input for n in nodes)]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    if not any(o.domain == MICROSOFT for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(MICROSOFT, 1))
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return replaced
