"""Each task's tensors in the V2 protocol, and how a V2 request reaches the same model queue as REST.

- `digit-classification`: input `pixels` FP32 [-1, 28, 28] (raw 0–255, white on black; UINT8 too);
  outputs `logits` and `probabilities` FP32 [-1, 10].
- `forecasting`: input `series` FP32 [-1, -1] (a batch of series of one length, oldest first; FP64
  too) and optional `horizon` INT32 [-1, 1] (the same in every row; INT64 too; default the model's
  longest); outputs `mean` and `std` FP32 [-1, horizon].

A tensor with a batch dimension of n counts as n inputs, checked as the REST routes check them and
queued beside theirs, so both protocols give the same numbers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from service.digits import DigitClassifier
from service.errors import InvalidInput
from service.forecasting import Forecaster
from service.schemas import FLOAT32_MAX, IMAGE_SIDE, ForecastInput, pixel_problem
from service.served import ServedModel
from service.v2.tensors import Tensor


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]
    accepted: tuple[str, ...] = ()
    """Datatypes taken besides `datatype`."""
    optional: bool = False

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Signature(ABC):
    """A task's V2 tensors, and inference from them."""

    inputs: ClassVar[tuple[TensorSpec, ...]]
    outputs: ClassVar[tuple[TensorSpec, ...]]

    def arrays(self, tensors: dict[str, Tensor], max_inputs: int) -> dict[str, np.ndarray]:
        """The request's tensors by name, checked against the signature's names and datatypes."""
        known = {spec.name: spec for spec in self.inputs}
        unknown = sorted(set(tensors) - set(known))
        if unknown:
            raise InvalidInput(
                f"inputs: {', '.join(map(repr, unknown))} not known; this model takes {self.input_list()}"
            )
        arrays = {}
        for spec in self.inputs:
            tensor = tensors.get(spec.name)
            if tensor is None:
                if not spec.optional:
                    raise InvalidInput(
                        f"inputs: {spec.name!r} is missing; this model takes {self.input_list()}"
                    )
                continue
            if tensor.datatype not in (spec.datatype, *spec.accepted):
                raise InvalidInput(
                    f"input {spec.name!r}: datatype is {tensor.datatype}; send "
                    f"{' or '.join((spec.datatype, *spec.accepted))}"
                )
            arrays[spec.name] = tensor.array
        rows = len(next(iter(arrays.values())))
        if rows > max_inputs:
            raise InvalidInput(
                f"the batch dimension is {rows}; at most {max_inputs} inputs per request "
                "(RNNSERVE_MAX_INPUTS_PER_REQUEST): split them over several requests"
            )
        return arrays

    def input_list(self) -> str:
        return ", ".join(f"{s.name} {s.datatype} {list(s.shape)}" + (" (optional)" if s.optional else "")
                         for s in self.inputs)  # fmt: skip

    @abstractmethod
    async def infer(
        self, model: ServedModel[Any, Any], arrays: dict[str, np.ndarray], timeout_s: float | None
    ) -> dict[str, np.ndarray]:
        """Every output, by name, for the checked input arrays."""


class DigitSignature(Signature):
    inputs = (TensorSpec("pixels", "FP32", (-1, IMAGE_SIDE, IMAGE_SIDE), accepted=("UINT8",)),)
    outputs = (TensorSpec("logits", "FP32", (-1, 10)), TensorSpec("probabilities", "FP32", (-1, 10)))

    async def infer(
        self, model: ServedModel[Any, Any], arrays: dict[str, np.ndarray], timeout_s: float | None
    ) -> dict[str, np.ndarray]:
        assert isinstance(model, DigitClassifier)
        pixels = arrays["pixels"]
        if pixels.ndim != 3 or pixels.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE) or not len(pixels):
            raise InvalidInput(
                f"input 'pixels': shape is {list(pixels.shape)}; send [n, 28, 28] with n ≥ 1 "
                "(raw 0–255 values, white digit on black)"
            )
        images = pixels.astype(np.float32)
        if not np.isfinite(images).all():
            raise InvalidInput("input 'pixels': must hold finite numbers")
        lows, highs = images.min(axis=(1, 2)), images.max(axis=(1, 2))
        errors = []
        for index, (low, high) in enumerate(zip(lows.tolist(), highs.tolist(), strict=True)):
            if low < 0 or high > 255:
                problem: str | None = (
                    f"values must lie in 0–255 (raw, not normalised); found {low:g} to {high:g}"
                )
            else:
                problem = pixel_problem(low, high)
            if problem:
                errors.append({"loc": f"pixels[{index}]", "msg": problem})
        if errors:
            raise InvalidInput.listing(errors)
        scores = np.stack(await model.scores(images, timeout_s))
        return {"logits": scores[:, 0], "probabilities": scores[:, 1]}


class ForecastSignature(Signature):
    inputs = (
        TensorSpec("series", "FP32", (-1, -1), accepted=("FP64",)),
        TensorSpec("horizon", "INT32", (-1, 1), accepted=("INT64",), optional=True),
    )
    outputs = (TensorSpec("mean", "FP32", (-1, -1)), TensorSpec("std", "FP32", (-1, -1)))

    async def infer(
        self, model: ServedModel[Any, Any], arrays: dict[str, np.ndarray], timeout_s: float | None
    ) -> dict[str, np.ndarray]:
        assert isinstance(model, Forecaster)
        series = arrays["series"]
        if series.ndim != 2 or not len(series):
            raise InvalidInput(
                f"input 'series': shape is {list(series.shape)}; send [n, length]: n ≥ 1 series of one "
                "length, oldest value first"
            )
        if not np.isfinite(series).all() or float(np.abs(series).max(initial=0)) > FLOAT32_MAX:
            raise InvalidInput(
                f"input 'series': values must be finite and within ±{FLOAT32_MAX:.3g} (float32)"
            )
        horizon = self.horizon(arrays.get("horizon"), len(series), model.max_horizon)
        items = [
            ForecastInput.model_construct(series=row.astype(np.float32), horizon=horizon) for row in series
        ]
        try:
            queries = model.prepare(items, many=True)
        except InvalidInput as exc:
            located = {(e["loc"], e["msg"]): e for e in map(_v2_location, exc.errors or [])}
            raise InvalidInput.listing(list(located.values())) from None  # one horizon error, not n
        moments = np.stack(await model.queue.submit_many([q.window for q in queries], timeout_s))
        mean, std = moments[:, 0, :horizon], moments[:, 1, :horizon]
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise InvalidInput(
                "input 'series': its values are too large for the model's float32 arithmetic (the forecast "
                "overflowed); divide the series by a constant and scale the answer back"
            )
        return {"mean": mean, "std": std}

    @staticmethod
    def horizon(given: np.ndarray | None, rows: int, longest: int) -> int:
        if given is None:
            return longest
        values = np.unique(given)
        if given.size not in (1, rows) or len(values) != 1:
            raise InvalidInput(
                f"input 'horizon': holds {given.size} values {values[:4].tolist()}: give one horizon, the "
                "same for every row (shape [n, 1] or [1, 1]); forecast other horizons in other requests"
            )
        return int(values[0])


def _v2_location(error: dict[str, str]) -> dict[str, str]:
    """`inputs[2].series` -> `series[2]`, `inputs[0].horizon` -> `horizon`: V2 names the tensors."""
    row, _, field = error["loc"].removeprefix("inputs[").partition("].")
    return {"loc": "horizon" if field == "horizon" else f"{field}[{row}]", "msg": error["msg"]}


SIGNATURES: dict[str, Signature] = {
    DigitClassifier.task: DigitSignature(),
    Forecaster.task: ForecastSignature(),
}


def signature_for(model: ServedModel[Any, Any]) -> Signature:
    return SIGNATURES[model.task]
