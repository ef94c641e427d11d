"""int8 graphs of the digit classifiers whose answers do not depend on their batch.

ONNX Runtime's dynamic quantization (`quantize_dynamic`) scales each call's activations by the range of
the whole batch, so an image's probabilities move with the images batched beside it (by up to 0.006
for `digit_lstm` on MNIST), and it has no integer GRU or RNN. Here each LSTM, GRU or RNN node of a float
graph is unrolled over its (fixed) number of steps instead, with every matrix product on the hidden
state done in integers at a fixed scale:

- the hidden state lies in (-1, 1) (it is a tanh, or a sigmoid times a tanh), so it is quantized to
  uint8 with the fixed scale 1/127.5 and zero point 128, whatever the batch holds;
- the weights are quantized per output column to 7 bits (-63…63), so that no CPU kernel saturates
  its 16-bit pair sums (255 · 63 · 2 < 2^15, the reason for ONNX Runtime's `reduce_range`);
- the input projection of a layer whose input is another layer's hidden state is done the same way;
  that of the first layer (normalized pixels, of no fixed range) stays float, as do the gates'
  nonlinearities, the head and the temperature scaling.

Each product is ONNX Runtime's `com.microsoft.MatMulIntegerToFloat`, and every row of a batch is
computed on its own: an answer is the same alone and in any batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

WEIGHT_LEVELS = 63
HIDDEN_SCALE = np.float32(1 / 127.5)
HIDDEN_ZERO = np.uint8(128)
RECURRENT = ("LSTM", "GRU", "RNN")
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DEFAULT_ACTIVATIONS = {"LSTM": [b"Sigmoid", b"Tanh", b"Tanh"], "GRU": [b"Sigmoid", b"Tanh"], "RNN": [b"Tanh"]}
SHAPE_ONLY = ("Squeeze", "Unsqueeze", "Transpose", "Reshape", "Identity")
MICROSOFT = "com.microsoft"


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
        domain = MICROSOFT if op_type == "MatMulIntegerToFloat" else ""
        self.nodes.append(helper.make_node(op_type, inputs, names, name=base, domain=domain, **attributes))
        return names[0] if outputs == 1 else names

    def integer_product(self, hidden: str, weights: str, scales: str, bias: str | None = None) -> str:
        """`hidden` (in (-1, 1)) times int8 `weights`, as float: both quantized at fixed scales."""
        scale, zero = self.constant("hidden_scale", HIDDEN_SCALE), self.constant("hidden_zero", HIDDEN_ZERO)
        quantized = self.op("QuantizeLinear", [hidden, scale, zero])
        inputs = [quantized, weights, scale, scales, zero, ""] + ([bias] if bias else [])
        return self.op("MatMulIntegerToFloat", inputs)


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
        raise ValueError(f"{node.name}: {node.op_type} with {', '.join(found)} cannot be unrolled here")
    return attributes


def unroll(node: Any, weights: dict[str, np.ndarray], steps: int, bounded_input: bool) -> Builder:
    """The nodes that compute `node` (a forward LSTM, GRU or RNN of time-major input) step by step, with
    its outputs' names; its input projection in integers when its input lies in (-1, 1)."""
    hidden = checked(node)["hidden_size"]
    gates = GATES[node.op_type]
    graph = Builder(node.name)
    w, r = weights[node.input[1]][0], weights[node.input[2]][0]
    both = (
        weights[node.input[3]][0] if len(node.input) > 3 and node.input[3] else np.zeros(2 * gates * hidden)
    )
    input_bias, hidden_bias = (
        both[: gates * hidden].astype(np.float32),
        both[gates * hidden :].astype(np.float32),
    )
    x = node.input[0]
    if bounded_input:
        w_q, w_scale = quantize_columns(w)
        projected = graph.integer_product(
            x,
            graph.constant("w", w_q),
            graph.constant("w_scale", w_scale),
            graph.constant("w_bias", input_bias),
        )
    else:
        projected = graph.op(
            "Add",
            [graph.op("MatMul", [x, graph.constant("w", w.T.copy())]), graph.constant("w_bias", input_bias)],
        )
    each = graph.op("Split", [projected], steps, axis=0)  # steps × [1, batch, gates·hidden]
    r_levels, r_scales = quantize_columns(r)
    r_q, r_scale = graph.constant("r", r_levels), graph.constant("r_scale", r_scales)
    r_bias = graph.constant("r_bias", hidden_bias)
    outputs = list(node.output) + [""] * (3 - len(node.output))
    h = initial_state(graph, node, 5, x, hidden)
    c = initial_state(graph, node, 6, x, hidden) if node.op_type == "LSTM" else ""
    states = []
    for t in range(steps):
        recurrent = graph.integer_product(h, r_q, r_scale, r_bias)
        if node.op_type == "LSTM":
            h, c = lstm_step(graph, each[t], recurrent, c, hidden)
        elif node.op_type == "GRU":
            h = gru_step(graph, each[t], recurrent, h, hidden)
        else:
            h = graph.op("Tanh", [graph.op("Add", [each[t], recurrent])])
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


def lstm_step(graph: Builder, x: str, recurrent: str, c: str, hidden: int) -> tuple[str, str]:
    """One LSTM step (ONNX gate order i, o, f, c): the new hidden and cell states."""
    gates = graph.op("Add", [x, recurrent])
    sizes = graph.constant("split_3_1", np.array([3 * hidden, hidden], np.int64))
    sigmoid_part, candidate_part = graph.op("Split", [gates, sizes], 2, axis=2)
    i, o, f = graph.op("Split", [graph.op("Sigmoid", [sigmoid_part])], 3, axis=2)
    cell = graph.op(
        "Add", [graph.op("Mul", [f, c]), graph.op("Mul", [i, graph.op("Tanh", [candidate_part])])]
    )
    return graph.op("Mul", [o, graph.op("Tanh", [cell])]), cell


def gru_step(graph: Builder, x: str, recurrent: str, h: str, hidden: int) -> str:
    """One GRU step (ONNX gate order z, r, h; the reset gate applied after the recurrent product)."""
    sizes = graph.constant("split_2_1", np.array([2 * hidden, hidden], np.int64))
    x_zr, x_n = graph.op("Split", [x, sizes], 2, axis=2)
    h_zr, h_n = graph.op("Split", [recurrent, sizes], 2, axis=2)
    z, r = graph.op("Split", [graph.op("Sigmoid", [graph.op("Add", [x_zr, h_zr])])], 2, axis=2)
    n = graph.op("Tanh", [graph.op("Add", [x_n, graph.op("Mul", [r, h_n])])])
    return graph.op("Add", [n, graph.op("Mul", [z, graph.op("Sub", [h, n])])])


def bounded(name: str, producers: dict[str, Any]) -> bool:
    """Whether tensor `name` is a recurrent node's hidden states (its output 0 or 1, through shape-only
    nodes), which lie in (-1, 1)."""
    node = producers.get(name)
    while node is not None and node.op_type in SHAPE_ONLY:
        name = node.input[0]
        node = producers.get(name)
    return node is not None and node.op_type in RECURRENT and name in node.output[:2]


def int8_graph(source: Path, target: Path) -> list[dict[str, str]]:
    """Write `source`'s graph with every recurrent node unrolled in integers (above) to `target`; the
    nodes replaced, each as {node, op_type}."""
    import onnx
    from onnx import numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(source)))
    graph = model.graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    described = [*graph.input, *graph.value_info, *graph.output]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in described}
    producers = {output: node for node in graph.node for output in node.output}
    nodes, replaced, used = [], [], set()
    for node in graph.node:
        if node.op_type not in RECURRENT:
            nodes.append(node)
            continue
        checked(node)
        steps = shapes.get(node.input[0], [0])[0]
        if not steps:
            raise ValueError(
                f"{node.name}: its input's number of steps is not fixed, so it cannot be unrolled"
            )
        unrolled = unroll(node, weights, steps, bounded(node.input[0], producers))
        nodes += unrolled.nodes
        graph.initializer.extend(unrolled.initializers)
        used.update(node.input[1:4])
        replaced.append({"node": node.name, "op_type": node.op_type})
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
