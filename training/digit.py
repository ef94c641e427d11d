"""Train the digit LSTM on MNIST, export it, and measure the export with ONNX Runtime.

python -m training.digit --data-dir ../shared/data --out models

The steps, in order: `load_data`, `train_epoch` (one pass over the training images), `eager_accuracy`
(evaluate), `fit` (the epochs), `export_checked` (ONNX and TorchScript, parity, ONNX predictions).
The comparison (`training.compare_runs`) trains its digit variants with the same functions.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training import loop, plots
from training.common import base_parser, pick_device, seed_everything, setup_logging, write_json
from training.data import DataNotFoundError, load_mnist
from training.digit_recipe import INPUTS, OUTPUTS, DigitRecipe, describe
from training.export import ONNX_FILE, check_parity, export_model, next_version, onnx_session, write_metadata
from training.networks import IMAGE_SIZE, DigitClassifier, DigitLSTM
from training.recipes import with_overrides

logger = logging.getLogger(__name__)

NAME = "digit_lstm"


@dataclass(frozen=True)
class DigitData:
    train_images: torch.Tensor  # uint8, N×28×28
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


@dataclass
class Fitted:
    history: dict[str, list[float]] = field(
        default_factory=lambda: {"train loss": [], "train accuracy": [], "test accuracy (eager)": []}
    )
    epoch_seconds: list[float] = field(default_factory=list)


def load_data(data_dir: Path, recipe: DigitRecipe) -> DigitData:
    """MNIST, cut to the recipe's numbers of training and test images."""
    try:
        train_images, train_labels = load_mnist(data_dir, train=True)
        test_images, test_labels = load_mnist(data_dir, train=False)
    except DataNotFoundError as error:
        raise SystemExit(str(error)) from error
    train, test = slice(recipe.train_images), slice(recipe.test_images)
    return DigitData(train_images[train], train_labels[train], test_images[test], test_labels[test])


def random_affine(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random rotations (±10°), scalings (±10 %) and shifts (±2 px) of a batch of images."""
    n = images.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.empty(n).uniform_(low, high, generator=generator)

    angle = uniform(-math.pi / 18, math.pi / 18)
    scale = uniform(0.9, 1.1)
    shift = 2.0 / (IMAGE_SIZE / 2)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(angle) / scale
    theta[:, 0, 1] = -torch.sin(angle) / scale
    theta[:, 1, 0] = torch.sin(angle) / scale
    theta[:, 1, 1] = torch.cos(angle) / scale
    theta[:, 0, 2] = uniform(-shift, shift)
    theta[:, 1, 2] = uniform(-shift, shift)
    grid = F.affine_grid(theta.to(images.device), [n, 1, IMAGE_SIZE, IMAGE_SIZE], align_corners=False)
    warped = F.grid_sample(images.unsqueeze(1), grid, align_corners=False, padding_mode="zeros")
    return warped.squeeze(1)


def train_epoch(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    data: DigitData,
    recipe: DigitRecipe,
    generator: torch.Generator,
    label: str,
) -> loop.TrainedSteps:
    """One pass over the training images in a fresh order, augmented when the recipe says so."""
    device = next(network.parameters()).device

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(data.train_images), generator=generator)
        for index in order.split(recipe.batch_size):
            images = data.train_images[index].to(torch.float32)
            if recipe.augment:
                images = random_affine(images, generator)
            yield images.to(device), data.train_labels[index].to(device)

    loss_of = partial(loop.classification_loss, label_smoothing=recipe.label_smoothing)
    steps = math.ceil(len(data.train_images) / recipe.batch_size)
    return loop.train(
        network,
        optimizer,
        batches(),
        loss_of,
        steps=steps,
        schedule=schedule,
        clip_norm=recipe.gradient_clip,
        label=label,
    )


def eager_accuracy(network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of the eager network on uint8 `images`, in batches of 1000."""
    device = next(network.parameters()).device
    parts = loop.chunks(len(images), 1000)
    batches = ((images[p].to(device, torch.float32), labels[p].to(device)) for p in parts)
    return loop.accuracy(network, batches)


def fit(network: nn.Module, data: DigitData, recipe: DigitRecipe, name: str) -> Fitted:
    """Train `network` for the recipe's epochs (AdamW, one-cycle); the test accuracy after each."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * math.ceil(len(data.train_images) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe.lr, total_steps=steps, pct_start=recipe.warmup
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    fitted = Fitted()
    for epoch in range(1, recipe.epochs + 1):
        label = f"{name} epoch {epoch}/{recipe.epochs}"
        trained = train_epoch(network, optimizer, schedule, data, recipe, generator, label)
        test_accuracy = eager_accuracy(network, data.test_images, data.test_labels)
        scores = (trained.mean_loss, trained.accuracy, test_accuracy)
        for values, value in zip(fitted.history.values(), scores, strict=True):
            values.append(value)
        fitted.epoch_seconds.append(trained.seconds)
        logger.info("%s: loss %.4f, train acc %.4f, test acc %.4f, %.0f s", label, *scores, trained.seconds)
    return fitted


def onnx_predictions(path: Path, images: np.ndarray) -> np.ndarray:
    """Predicted digits for uint8 images through ONNX Runtime on the CPU."""
    session = onnx_session(path)
    pixels = images.astype(np.float32)
    parts = loop.chunks(len(images), 1000)
    return np.concatenate([session.run(["probabilities"], {"pixels": pixels[p]})[0].argmax(1) for p in parts])


def export_checked(
    classifier: nn.Module, out_dir: Path, data: DigitData, seed: int
) -> tuple[float, np.ndarray]:
    """Export to ONNX and TorchScript and check both against the eager model on random images; the
    largest relative difference, and the ONNX export's predictions for the test images."""
    export_model(classifier, (data.test_images[:2].to(torch.float32),), INPUTS, OUTPUTS, out_dir)
    generator = torch.Generator().manual_seed(seed)
    cases = [(torch.rand(b, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 255,) for b in (1, 37)]
    parity = check_parity(out_dir, classifier, cases)
    return parity, onnx_predictions(out_dir / ONNX_FILE, data.test_images.numpy())


def train(recipe: DigitRecipe, args: argparse.Namespace, argv: list[str]) -> None:
    """Train by `recipe`, export into args.out, write the metrics and plots into args.report_dir."""
    device = pick_device(args.device)
    seed_everything(recipe.seed)
    data = load_data(args.data_dir, recipe)
    network = DigitLSTM(recipe.hidden_size, recipe.num_layers, recipe.dropout).to(device)
    started = time.perf_counter()
    fitted = fit(network, data, recipe, NAME)
    duration = time.perf_counter() - started

    version = args.version or next_version(args.out / NAME)
    out_dir = args.out / NAME / version
    classifier = DigitClassifier(network.cpu()).eval()
    parity, predictions = export_checked(classifier, out_dir, data, recipe.seed)
    onnx_accuracy = float((predictions == data.test_labels.numpy()).mean())
    metrics = {
        "test_accuracy_onnx": onnx_accuracy,
        "test_accuracy_eager": fitted.history["test accuracy (eager)"][-1],
        "test_images": len(data.test_images),
        "train_loss": fitted.history["train loss"][-1],
        "parity_max_relative_difference": parity,
    }
    description = (
        f"{recipe.num_layers}-layer LSTM reading an MNIST image as 28 rows of 28 pixels, "
        "linear head on the last row"
    )
    metadata = describe(
        recipe,
        name=NAME,
        version=version,
        description=description,
        config={},
        images=(len(data.train_images), len(data.test_images)),
        device=str(device),
        seconds=duration,
    )
    write_metadata(out_dir, metadata | {"metrics": metrics}, "training.digit", argv)

    report_dir = args.report_dir or Path("reports") / NAME / version
    write_json(report_dir / "metrics.json", {"metrics": metrics, "history": fitted.history})
    plots.curves(report_dir / "curves.png", fitted.history, f"{NAME} v{version}")
    title = f"{NAME} v{version}: ONNX Runtime, test accuracy {onnx_accuracy:.4f}"
    plots.confusion_matrix(report_dir / "confusion.png", data.test_labels.numpy(), predictions, title)
    logger.info(
        "exported %s (ONNX test accuracy %.4f, %.0f s of training); report in %s",
        out_dir,
        onnx_accuracy,
        duration,
        report_dir,
    )


def main(argv: list[str] | None = None) -> None:
    defaults = DigitRecipe()
    parser = base_parser("Train and export the MNIST digit LSTM.", epochs=str(defaults.epochs))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="folder holding MNIST/raw (downloaded there when missing)",
    )
    for option in ("batch_size", "lr", "hidden_size", "num_layers", "dropout"):
        value = getattr(defaults, option)
        parser.add_argument(f"--{option.replace('_', '-')}", type=type(value), help=f"default {value}")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, help="default: on")
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    recipe = with_overrides(defaults.dry() if args.dry_run else defaults, args)
    train(recipe, args, argv)


if __name__ == "__main__":
    main()
