"""Scalings of a digit classifier's logits that keep every argmax, fitted by the negative log-likelihood and
folded into the exported graphs: the logits of an input are divided by one positive number (its
temperature) before the softmax, in the ONNX graph and in the TorchScript module alike.

Two methods: `temperature` divides every input's logits by one constant T; `gap-temperature` divides an
input's logits by T(gap) = exp(log_temperature + gap_coefficient · gap), where gap is the difference
between its two largest logits, so an input the network barely separates can be softened while a clear one
is sharpened. Either way all logits of an input are divided by the same positive number, so the argmax of
every input, and with it every prediction, stays what it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from onnx import NodeProto, TensorProto

PROBABILITIES = "probabilities"
RAW_PREFIX = "raw_"
TEMPERATURE = "temperature"


class Scaling(Protocol):
    """A fitted scaling: what it is called, its parameters, and the temperature of each input, in numpy,
    in ONNX nodes and as a TorchScript-able module."""

    method: ClassVar[str]
    description: ClassVar[str]

    def parameters(self) -> dict[str, float]: ...

    def temperatures(self, logits: np.ndarray) -> np.ndarray:
        """The temperature of each row of raw `logits` (n, classes), as (n, 1)."""
        ...

    def onnx_temperature(self, raw: str) -> tuple[list[NodeProto], list[TensorProto]]:
        """Nodes and constants that compute the tensor named TEMPERATURE from the raw logits `raw`."""
        ...

    def module(self) -> nn.Module:
        """A module mapping raw logits (batch, classes) to their temperatures, broadcastable against them."""
        ...


def apply(scaling: Scaling, logits: np.ndarray) -> np.ndarray:
    """Raw `logits` divided by their temperatures, in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits / scaling.temperatures(logits)


def top_two_gap(logits: np.ndarray) -> np.ndarray:
    """The largest minus the second largest logit of each row, as (n, 1)."""
    top_two = np.sort(logits, axis=1)[:, -2:]
    return top_two[:, 1:] - top_two[:, :1]


def as_float32(value: float) -> float:
    """`value` rounded to float32, the precision the graphs hold it in, so metadata and graph agree."""
    return float(np.float32(value))


class ConstantTemperature(nn.Module):
    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.register_buffer(TEMPERATURE, torch.tensor(temperature, dtype=torch.float32))
        self.temperature: torch.Tensor

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.temperature


class GapTemperatureModule(nn.Module):
    def __init__(self, log_temperature: float, gap_coefficient: float) -> None:
        super().__init__()
        self.register_buffer("log_temperature", torch.tensor(log_temperature, dtype=torch.float32))
        self.register_buffer("gap_coefficient", torch.tensor(gap_coefficient, dtype=torch.float32))
        self.log_temperature: torch.Tensor
        self.gap_coefficient: torch.Tensor

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        top_two = torch.topk(logits, 2, dim=-1).values
        gap = top_two[:, :1] - top_two[:, 1:]
        return torch.exp(self.log_temperature + self.gap_coefficient * gap)


@dataclass(frozen=True)
class Temperature:
    """Every input's logits divided by one temperature T (T < 1 sharpens)."""

    temperature: float
    method: ClassVar[str] = "temperature scaling"
    description: ClassVar[str] = "logits divided by a fitted temperature before the softmax"

    def parameters(self) -> dict[str, float]:
        return {"temperature": self.temperature}

    def temperatures(self, logits: np.ndarray) -> np.ndarray:
        return np.full((len(logits), 1), self.temperature)

    def onnx_temperature(self, raw: str) -> tuple[list[NodeProto], list[TensorProto]]:
        from onnx import numpy_helper

        return [], [numpy_helper.from_array(np.array(self.temperature, dtype=np.float32), TEMPERATURE)]

    def module(self) -> nn.Module:
        return ConstantTemperature(self.temperature)


@dataclass(frozen=True)
class GapTemperature:
    """An input's logits divided by exp(log_temperature + gap_coefficient · gap), gap being its largest
    logit minus its second largest."""

    log_temperature: float
    gap_coefficient: float
    method: ClassVar[str] = "gap temperature scaling"
    description: ClassVar[str] = (
        "logits divided by a fitted temperature that depends on the gap between the two largest logits, "
        "before the softmax"
    )

    def parameters(self) -> dict[str, float]:
        return {"log_temperature": self.log_temperature, "gap_coefficient": self.gap_coefficient}

    def temperatures(self, logits: np.ndarray) -> np.ndarray:
        return np.exp(self.log_temperature + self.gap_coefficient * top_two_gap(logits))

    def onnx_temperature(self, raw: str) -> tuple[list[NodeProto], list[TensorProto]]:
        from onnx import helper, numpy_helper

        constants: dict[str, np.ndarray] = {
            "top_k": np.array([2], dtype=np.int64),
            "gap_weights": np.array([[1.0], [-1.0]], dtype=np.float32),  # top1 - top2, kept as (batch, 1)
            "gap_coefficient": np.array(self.gap_coefficient, dtype=np.float32),
            "log_temperature": np.array(self.log_temperature, dtype=np.float32),
        }
        nodes = [
            helper.make_node("TopK", [raw, "top_k"], ["top_two", "top_two_indices"], axis=-1, name="top_two"),
            helper.make_node("MatMul", ["top_two", "gap_weights"], ["gap"], name="gap"),
            helper.make_node("Mul", ["gap", "gap_coefficient"], ["gap_term"], name="gap_term"),
            helper.make_node("Add", ["gap_term", "log_temperature"], ["log_temperatures"], name="log_t"),
            helper.make_node("Exp", ["log_temperatures"], [TEMPERATURE], name=TEMPERATURE),
        ]
        return nodes, [numpy_helper.from_array(value, name) for name, value in constants.items()]

    def module(self) -> nn.Module:
        return GapTemperatureModule(self.log_temperature, self.gap_coefficient)


# The --method names of training.calibrate and the method each writes into metadata.json.
METHODS = {"temperature": Temperature.method, "gap-temperature": GapTemperature.method}


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean −log softmax(logits / temperature)[label], in float64."""
    scores = torch.from_numpy(np.asarray(logits, dtype=np.float64)) / temperature
    return float(F.cross_entropy(scores, torch.from_numpy(np.asarray(labels, dtype=np.int64))))


def minimise_nll(
    logits: np.ndarray, labels: np.ndarray, size: int, temperatures: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """The `size` parameters p, from zeros, that minimise the NLL of softmax(logits / temperatures(p)),
    by L-BFGS in float64."""
    scores = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    target = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    found = torch.zeros(size, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [found], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(scores / temperatures(found), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    return found.detach()


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T): L-BFGS on log T (the NLL is convex in 1/T,
    so the minimum is the only one)."""
    return float(minimise_nll(logits, labels, 1, lambda p: p[0].exp()).exp()[0])


def fit_gap_temperature(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(log_temperature, gap_coefficient) that minimise the NLL of softmax(logits / T(gap)) with
    T(gap) = exp(log_temperature + gap_coefficient · gap); fitted on the standardised gap (better
    conditioned), then expressed on the gap itself."""
    gap = torch.from_numpy(top_two_gap(np.asarray(logits, dtype=np.float64)))
    centre, spread = float(gap.mean()), float(gap.std())
    standard = (gap - centre) / spread
    offset, slope = minimise_nll(logits, labels, 2, lambda p: (p[0] + p[1] * standard).exp()).tolist()
    return offset - slope * centre / spread, slope / spread


def fit_scaling(method: str, logits: np.ndarray, labels: np.ndarray) -> Scaling:
    """Fit `method` (a key of METHODS) on raw `logits` and `labels`; parameters rounded to float32."""
    if method == "temperature":
        return Temperature(as_float32(fit_temperature(logits, labels)))
    if method == "gap-temperature":
        log_temperature, gap_coefficient = fit_gap_temperature(logits, labels)
        return GapTemperature(as_float32(log_temperature), as_float32(gap_coefficient))
    raise ValueError(f"unknown calibration method {method!r}: choose one of {', '.join(METHODS)}")


def scaling_of(calibration: dict[str, Any]) -> Scaling:
    """The scaling a version's metadata.json `calibration` records."""
    if calibration["method"] == Temperature.method:
        return Temperature(calibration["temperature"])
    if calibration["method"] == GapTemperature.method:
        return GapTemperature(calibration["log_temperature"], calibration["gap_coefficient"])
    raise ValueError(f"unknown calibration method {calibration['method']!r} in metadata.json")


def scaled_onnx(source: Path, target: Path, scaling: Scaling) -> None:
    """Copy the ONNX graph at `source` to `target` with the logits divided by their temperature before the
    Softmax that writes `probabilities`. The tensor the Softmax reads (the `logits` output) becomes the
    scaled one; the node that wrote it now writes `raw_<name>`, which only the scaling reads."""
    import onnx
    from onnx import helper

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
    nodes, constants = scaling.onnx_temperature(raw)
    graph.initializer.extend(constants)
    nodes.append(helper.make_node("Div", [raw, TEMPERATURE], [logits], name="divide_by_temperature"))
    for offset, node in enumerate(nodes, start=1):
        graph.node.insert(position + offset, node)
    onnx.checker.check_model(model, full_check=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))


class TemperatureScaled(nn.Module):
    """A digit classifier (pixels → logits, probabilities) whose logits are divided by the temperatures
    `temperature` gives for them; it returns the scaled logits and their softmax."""

    def __init__(self, classifier: nn.Module, temperature: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.temperature = temperature

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, _ = self.classifier(pixels)
        scaled = logits / self.temperature(logits)
        return scaled, torch.softmax(scaled, dim=-1)


def scaled_torchscript(source: Path, target: Path, scaling: Scaling) -> TemperatureScaled:
    """Wrap the TorchScript module at `source` in TemperatureScaled, script it and save it to `target`; the
    (unscripted) wrapper is returned, the reference for a parity check."""
    classifier = torch.jit.load(str(source), map_location="cpu")
    wrapped = TemperatureScaled(classifier, scaling.module()).eval()
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(wrapped).save(str(target))
    return wrapped
