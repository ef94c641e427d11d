"""The digit classifier: 28×28 images (raw pixels 0–255, white on black) to probabilities of 0–9."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.schemas import IMAGE_SIDE
from service.served import ServedModel

NUM_CLASSES = 10

Images = list[np.ndarray] | np.ndarray
"""28×28 float32 images: a list of them, or one (n, 28, 28) array."""


class DigitClassifier(ServedModel[np.ndarray, np.ndarray]):
    """Serves a `digit-classification` model: input `pixels` (batch, 28, 28), output `probabilities`."""

    task = "digit-classification"
    input_names = ("pixels",)
    output_names = ("probabilities",)

    def run_batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        probabilities = self.runtime.run({"pixels": np.stack(inputs)})["probabilities"]
        if probabilities.shape != (len(inputs), NUM_CLASSES):
            raise RuntimeError(
                f"probabilities have shape {probabilities.shape}, expected ({len(inputs)}, {NUM_CLASSES})"
            )
        return list(probabilities)

    def sample_input(self) -> np.ndarray:
        return np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)

    async def classify(self, images: Images, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """One prediction per 28×28 float32 image, in order, computed in batches with other requests'."""
        rows = await self.queue.submit_many(list(images), timeout_s)
        return [self.prediction(row) for row in rows]

    def prediction(self, probabilities: np.ndarray) -> dict[str, Any]:
        digit = int(np.argmax(probabilities))
        return {
            "digit": digit,
            "confidence": probabilities[digit],
            "probabilities": probabilities,
            "model": self.name,
            "version": self.version,
        }
