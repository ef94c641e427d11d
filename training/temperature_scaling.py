"""A temperature folded into an exported digit classifier: its logits divided by T before the softmax, in
the ONNX graph and in the TorchScript module alike. Dividing by a positive constant keeps every argmax."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

PROBABILITIES = "probabilities"
RAW_PREFIX = "raw_"
TEMPERATURE = "temperature"


def scaled_onnx(source: Path, target: Path, temperature: float) -> None:
    """Copy the ONNX graph at `source` to `target` with a Div by the constant `temperature` before the
    Softmax that writes `probabilities`. The tensor the Softmax reads (the `logits` output) becomes the
    scaled one; the node that wrote it now writes `raw_<name>`, which only the Div reads."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    softmaxes = [node for node in graph.node if node.op_type == "Softmax" and PROBABILITIES in node.output]
    if len(softmaxes) != 1:
        raise ValueError(
            f"{source}: has {len(softmaxes)} Softmax nodes writing `{PROBABILITIES}`, expected exactly one; "
            "only a digit classifier exported by training.digit or training.compare_runs can be calibrated"
        )
    logits = softmaxes[0].input[0]
    raw = RAW_PREFIX + logits
    position, producer = next((i, n) for i, n in enumerate(graph.node) if logits in n.output)
    producer.output[list(producer.output).index(logits)] = raw
    graph.initializer.append(numpy_helper.from_array(np.array(temperature, dtype=np.float32), TEMPERATURE))
    divide = helper.make_node("Div", [raw, TEMPERATURE], [logits], name="divide_by_temperature")
    graph.node.insert(position + 1, divide)
    onnx.checker.check_model(model, full_check=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))


class TemperatureScaled(nn.Module):
    """A digit classifier (pixels → logits, probabilities) whose logits are divided by `temperature`;
    it returns the scaled logits and their softmax."""

    def __init__(self, classifier: nn.Module, temperature: float) -> None:
        super().__init__()
        self.classifier = classifier
        self.register_buffer(TEMPERATURE, torch.tensor(temperature, dtype=torch.float32))
        self.temperature: torch.Tensor

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _ = self.classifier(pixels)
        scaled = logits / self.temperature
        return scaled, torch.softmax(scaled, dim=-1)


def scaled_torchscript(source: Path, target: Path, temperature: float) -> TemperatureScaled:
    """Wrap the TorchScript module at `source` in TemperatureScaled, script it and save it to `target`; the
    (unscripted) wrapper is returned, the reference for a parity check."""
    wrapped = TemperatureScaled(torch.jit.load(str(source), map_location="cpu"), temperature).eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(wrapped).save(str(target))
    return wrapped
