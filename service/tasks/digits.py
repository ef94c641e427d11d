"""The digit task: square images (raw pixels 0–255, white digit on black, MNIST's convention) to the
probability of each class. The image side and the classes come from the model's metadata.

Its input rules are here and nowhere else: a JSON image (REST), a batch of images (V2, binary
pixels) and an image file after decoding all pass through `value_problem`, so the same mistake reads
the same on every route.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.config import BatchSettings
from service.repository import ModelArtifact
from service.tasks.base import Locate, Problem, ServedModel, TensorSpec

PIXEL_RANGE = (0.0, 255.0)
"""The values a pixel may take: raw 0–255, not normalised (the model's graph normalises them)."""

LIGHT_BORDER = 191.0
"""An image whose outermost pixels average more than this is dark on light: MNIST's border is 0."""

Images = list[np.ndarray] | np.ndarray
"""side×side float32 images: a list of them, or one (n, side, side) array."""

Scores = np.ndarray
"""One image's logits and probabilities, stacked: (2, classes)."""


def value_problem(low: float, high: float, border: float) -> str | None:
    """What is wrong with an image whose pixels lie in [low, high] and whose outermost pixels average
    `border`, if it cannot be read as a digit: the one wording of the pixel rules."""
    smallest, largest = PIXEL_RANGE
    if low < smallest or high > largest:
        return (
            f"values must lie in {smallest:g}–{largest:g} (raw values, white digit on black as in MNIST; not "
            f"normalised); found values from {low:g} to {high:g}"
        )
    if low == high:
        return (
            f"the image holds no digit: every pixel is {low:g}; draw the digit in light values "
            "(up to 255) on a black (0) background"
        )
    if high <= 1:
        return (
            f"the pixels look scaled to 0–1 (the largest is {high:g}): send raw 0–255 values, "
            "i.e. multiply by 255"
        )
    if border > LIGHT_BORDER:
        return (
            f"the image looks dark on light (its border averages {border:.0f}): the model reads a white "
            "digit on black, as in MNIST; send 255 minus each value"
        )
    return None


def border_indices(side: int) -> np.ndarray:
    """Where a flattened side×side image's outermost pixels are."""
    inner = np.zeros((side - 2, side - 2), dtype=bool)
    return np.flatnonzero(np.pad(inner, 1, constant_values=True))


class DigitClassifier(ServedModel[np.ndarray, Scores]):
    """Serves a `digit-classification` model: input `pixels` (batch, side, side), output `probabilities`
    and, when the graph has it, `logits` (else the log-probabilities stand in: logits up to a constant
    per image, which softmax ignores)."""

    task = "digit-classification"
    graph_inputs = ("pixels",)
    graph_outputs = ("probabilities",)

    def __init__(self, artifact: ModelArtifact, batching: BatchSettings) -> None:
        self.side = int(artifact.config("image_size"))
        self.classes = int(artifact.config("num_classes"))
        self._border = border_indices(self.side)
        super().__init__(artifact, batching)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("pixels", "FP32", (-1, self.side, self.side), accepted=("UINT8",)),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (
            TensorSpec("logits", "FP32", (-1, self.classes)),
            TensorSpec("probabilities", "FP32", (-1, self.classes)),
        )

    # Input rules.

    def pixels_problem(self, array: np.ndarray) -> str | None:
        """What is wrong with one image given as numbers (side rows of side, or side² in a row)."""
        side = self.side
        if array.shape not in ((side, side), (side * side,)):
            if array.ndim == 1:
                got = f"{len(array)} number" + ("" if len(array) == 1 else "s")
            else:
                got = f"an array of shape {array.shape}"
            return f"must be {side} rows of {side} numbers, or {side * side} numbers; got {got}"
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return "must hold finite numbers: found NaN or infinity"
        flat = array.ravel()
        border = float(np.add.reduce(flat.take(self._border))) / len(self._border)
        return value_problem(float(np.minimum.reduce(flat)), float(np.maximum.reduce(flat)), border)

    def image_problems(self, images: np.ndarray, field: str) -> list[Problem]:
        """Every image of an (n, side, side) batch that cannot be read as a digit, named `field`[row]."""
        if images.dtype.kind == "f" and not np.isfinite(images).all():
            rows = np.flatnonzero(~np.isfinite(images).all(axis=(1, 2)))
            return [Problem(field, "must hold finite numbers: found NaN or infinity", int(r)) for r in rows]
        lows, highs = images.min(axis=(1, 2)), images.max(axis=(1, 2))
        borders = images.reshape(len(images), -1).take(self._border, axis=1).mean(axis=1)
        suspect = np.flatnonzero(
            (lows < PIXEL_RANGE[0])
            | (highs > PIXEL_RANGE[1])
            | (lows == highs)
            | (highs <= 1)
            | (borders > LIGHT_BORDER)
        )
        problems = []
        for row in suspect.tolist():
            message = value_problem(float(lows[row]), float(highs[row]), float(borders[row]))
            if message:
                problems.append(Problem(field, message, row))
        return problems

    def tensor_problems(self, arrays: dict[str, np.ndarray]) -> list[Problem]:
        pixels = arrays["pixels"]
        if pixels.ndim != 3 or pixels.shape[1:] != (self.side, self.side) or not len(pixels):
            return [
                Problem(
                    "pixels",
                    f"shape is {list(pixels.shape)}; send [n, {self.side}, {self.side}] with n ≥ 1 "
                    "(raw 0–255 values, white digit on black)",
                )
            ]
        return self.image_problems(pixels, "pixels")

    # Inference.

    def run_batch(self, inputs: list[np.ndarray]) -> list[Scores]:
        outputs = self.runtime.run({"pixels": np.stack(inputs)})
        probabilities = outputs["probabilities"]
        logits = outputs.get("logits")
        if logits is None:
            logits = np.log(np.maximum(probabilities, np.finfo(np.float32).tiny))
        expected = (len(inputs), self.classes)
        if probabilities.shape != expected or logits.shape != expected:
            raise RuntimeError(
                f"probabilities and logits have shapes {probabilities.shape} and {logits.shape}, "
                f"expected {expected}"
            )
        return list(np.stack([logits, probabilities], axis=1))

    def sample_input(self) -> np.ndarray:
        return np.zeros((self.side, self.side), dtype=np.float32)

    async def classify(self, images: Images, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """One prediction per checked image, in order, computed in batches with other requests'."""
        return [self.prediction(probabilities) for _, probabilities in await self.scores(images, timeout_s)]

    async def scores(self, images: Images, timeout_s: float | None = None) -> list[Scores]:
        """The logits and probabilities of each checked image, in order, batched with others'."""
        return await self.queue.submit_many(list(images), timeout_s)

    async def infer(
        self, arrays: dict[str, np.ndarray], locate: Locate, timeout_s: float | None
    ) -> dict[str, np.ndarray]:
        scores = np.stack(await self.scores(arrays["pixels"].astype(np.float32, copy=False), timeout_s))
        return {"logits": scores[:, 0], "probabilities": scores[:, 1]}

    def prediction(self, probabilities: np.ndarray) -> dict[str, Any]:
        digit = int(probabilities.argmax())
        return {
            "digit": digit,
            "confidence": probabilities[digit],
            "probabilities": probabilities,
            "model": self.name,
            "version": self.version,
            "precision": self.precision,
        }
