"""The digit classifiers' training recipe, their tensor interface, and how a model trained by the recipe
describes itself in metadata.json."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from training.export import TensorSpec
from training.networks import IMAGE_SIZE, MNIST_MEAN, MNIST_STD, NUM_CLASSES
from training.recipes import recipe_json

INPUTS = [
    TensorSpec(
        "pixels", ("batch", IMAGE_SIZE, IMAGE_SIZE), "raw pixels in [0, 255], white digit on black (MNIST)"
    )
]
OUTPUTS = [
    TensorSpec("logits", ("batch", NUM_CLASSES), "unnormalised class scores for digits 0-9"),
    TensorSpec("probabilities", ("batch", NUM_CLASSES), "softmax of the logits"),
]
AUGMENTATION = "random affine: ±10°, ±10 % scale, ±2 px shift"


@dataclass(frozen=True)
class DigitRecipe:
    """Everything that decides a trained digit classifier: network size, optimisation, data, seed.

    AdamW with a one-cycle schedule that rises to `lr` over the first `warmup` share of the steps;
    cross-entropy with label smoothing; gradients clipped to norm `gradient_clip`.
    """

    hidden_size: int = 128
    num_layers: int = 2
    dropout: float = 0.1
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: float = 0.15
    label_smoothing: float = 0.05
    gradient_clip: float = 1.0
    augment: bool = True
    train_images: int | None = None
    """Train on the first this many MNIST training images (None: all 60,000)."""
    test_images: int | None = None
    """Score on the first this many MNIST test images (None: all 10,000)."""
    seed: int = 0
    dry_run: bool = False

    def dry(self) -> DigitRecipe:
        """The same recipe on a slice of MNIST for one epoch: seconds, not minutes."""
        return replace(self, epochs=1, train_images=2048, test_images=1000, dry_run=True)


def describe(
    recipe: DigitRecipe,
    *,
    name: str,
    version: str,
    description: str,
    config: dict[str, Any],
    images: tuple[int, int],
    device: str,
    seconds: float,
) -> dict[str, Any]:
    """metadata.json's description of a digit classifier: interface, network `config`, the recipe whole,
    and what the run was (`images`: how many training and test images it used)."""
    return {
        "name": name,
        "version": version,
        "task": "digit-classification",
        "description": description,
        "inputs": [s.as_json() for s in INPUTS],
        "outputs": [s.as_json() for s in OUTPUTS],
        "config": config
        | {
            "hidden_size": recipe.hidden_size,
            "num_layers": recipe.num_layers,
            "dropout": recipe.dropout,
            "image_size": IMAGE_SIZE,
            "num_classes": NUM_CLASSES,
        },
        "preprocessing": {
            "input": "raw pixels 0..255, white digit on black, 28x28 (MNIST convention)",
            "inside_graph": f"(pixels / 255 - {MNIST_MEAN}) / {MNIST_STD}, then softmax on the logits",
        },
        "recipe": recipe_json(recipe),
        "training": {
            "dataset": f"MNIST via torchvision ({images[0]} train / {images[1]} test images)",
            "augmentation": AUGMENTATION if recipe.augment else "none",
            "seed": recipe.seed,
            "device": device,
            "dry_run": recipe.dry_run,
            "seconds": round(seconds, 1),
        },
    }
