"""The digit classifier: 28×28 images (raw pixels 0–255, white on black) to probabilities of 0–9."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.schemas import IMAGE_SIDE
from service.served import ServedModel

NUM_CLASSES = 10

Images = list[np.ndarray] | np.ndarray
"""28×28 float32 images: a list of them, or one (n, 28, 28) array."""

Scores = np.ndarray
"""One image's logits and probabilities, stacked: (2, 10)."""


class DigitClassifier(ServedModel[np.ndarray, Scores]):
    """Serves a `digit-classification` model: input `pixels` (batch, 28, 28), output `probabilities`
    and, when the graph has it, `logits` (else the log-probabilities stand in: logits up to a constant
    per image, which softmax ignores)."""

    task = "digit-classification"
    input_names = ("pixels",)
    output_names = ("probabilities",)

    def run_batch(self, inputs: list[np.ndarray]) -> list[Scores]:
        outputs = self.runtime.run({"pixels": np.stack(inputs)})
        probabilities = outputs["probabilities"]
        logits = outputs.get("logits")
        if logits is None:
            logits = np.log(np.maximum(probabilities, np.finfo(np.float32).tiny))
        expected = (len(inputs), NUM_CLASSES)
        if probabilities.shape != expected or logits.shape != expected:
            raise RuntimeError(
                f"probabilities and logits have shapes {probabilities.shape} and {logits.shape}, "
                f"expected {expected}"
            )
        return list(np.stack([logits, probabilities], axis=1))

    def sample_input(self) -> np.ndarray:
        return np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)

    async def classify(self, images: Images, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """One prediction per 28×28 float32 image, in order, computed in batches with other requests'."""
        return [self.prediction(probabilities) for _, probabilities in await self.scores(images, timeout_s)]

    async def scores(self, images: Images, timeout_s: float | None = None) -> list[Scores]:
        """The logits and probabilities of each 28×28 float32 image, in order, batched with others'."""
        return await self.queue.submit_many(list(images), timeout_s)

    def prediction(self, probabilities: np.ndarray) -> dict[str, Any]:
        digit = int(np.argmax(probabilities))
        return {
            "digit": digit,
            "confidence": probabilities[digit],
            "probabilities": probabilities,
            "model": self.name,
            "version": self.version,
        }
