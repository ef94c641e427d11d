"""Train the digit LSTM on MNIST, export it, and measure the export with ONNX Runtime.

python -m training.digit --data-dir ../shared/data --out models
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from training import plots
from training.common import base_parser, pick_device, seed_everything, setup_logging, write_json
from training.data import DataNotFoundError, load_mnist
from training.export import TensorSpec, check_parity, export_model, next_version, onnx_session, write_metadata
from training.networks import IMAGE_SIZE, MNIST_MEAN, MNIST_STD, NUM_CLASSES, DigitClassifier, DigitLSTM

logger = logging.getLogger(__name__)

NAME = "digit_lstm"
INPUTS = [
    TensorSpec(
        "pixels", ("batch", IMAGE_SIZE, IMAGE_SIZE), "raw pixels in [0, 255], white digit on black (MNIST)"
    )
]
OUTPUTS = [
    TensorSpec("logits", ("batch", NUM_CLASSES), "unnormalised class scores for digits 0-9"),
    TensorSpec("probabilities", ("batch", NUM_CLASSES), "softmax of the logits"),
]


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


@torch.no_grad()
def eager_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device
) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), 1000):
        batch = images[start : start + 1000].to(device, torch.float32)
        correct += int((model(batch).argmax(1).cpu() == labels[start : start + 1000]).sum())
    return correct / len(images)


def onnx_predictions(path: Path, images: np.ndarray) -> np.ndarray:
    """Predicted digits for uint8 images through ONNX Runtime on the CPU."""
    session = onnx_session(path)
    predictions = [
        session.run(["probabilities"], {"pixels": images[start : start + 1000].astype(np.float32)})[0].argmax(
            1
        )
        for start in range(0, len(images), 1000)
    ]
    return np.concatenate(predictions)


def train(args: Any, argv: list[str]) -> None:
    device = pick_device(args.device)
    seed_everything(args.seed)
    try:
        train_images, train_labels = load_mnist(args.data_dir, train=True)
        test_images, test_labels = load_mnist(args.data_dir, train=False)
    except DataNotFoundError as error:
        raise SystemExit(str(error)) from error
    if args.dry_run:
        train_images, train_labels = train_images[:2048], train_labels[:2048]
        test_images, test_labels = test_images[:1000], test_labels[:1000]
    epochs = 1 if args.dry_run else args.epochs

    network = DigitLSTM(hidden_size=args.hidden_size, num_layers=args.num_layers, dropout=args.dropout).to(
        device
    )
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_images) / args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    generator = torch.Generator().manual_seed(args.seed)
    history: dict[str, list[float]] = {"train loss": [], "train accuracy": [], "test accuracy (eager)": []}
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        network.train()
        order = torch.randperm(len(train_images), generator=generator)
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{epochs}", unit="batch", mininterval=2.0)
        for step in bar:
            index = order[step * args.batch_size : (step + 1) * args.batch_size]
            images = train_images[index].to(torch.float32)
            if args.augment:
                images = random_affine(images, generator)
            images, labels = images.to(device), train_labels[index].to(device)
            logits = network(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(index)
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(index)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
        test_accuracy = eager_accuracy(network, test_images, test_labels, device)
        history["train loss"].append(total_loss / seen)
        history["train accuracy"].append(correct / seen)
        history["test accuracy (eager)"].append(test_accuracy)
        logger.info(
            "epoch %d: loss %.4f, train acc %.4f, test acc %.4f",
            epoch,
            total_loss / seen,
            correct / seen,
            test_accuracy,
        )
    duration = time.perf_counter() - started

    version = args.version or next_version(args.out / NAME)
    out_dir = args.out / NAME / version
    classifier = DigitClassifier(network.cpu()).eval()
    example = (test_images[:2].to(torch.float32),)
    export_model(classifier, example, INPUTS, OUTPUTS, out_dir)
    parity_cases = [(torch.rand(b, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 255,) for b in (1, 37)]
    parity = check_parity(out_dir, classifier, parity_cases)

    predictions = onnx_predictions(out_dir / "model.onnx", test_images.numpy())
    onnx_accuracy = float((predictions == test_labels.numpy()).mean())
    metrics = {
        "test_accuracy_onnx": onnx_accuracy,
        "test_accuracy_eager": history["test accuracy (eager)"][-1],
        "test_images": len(test_images),
        "train_loss": history["train loss"][-1],
        "parity_max_relative_difference": parity,
    }
    metadata = {
        "name": NAME,
        "version": version,
        "task": "digit-classification",
        "description": "2-layer LSTM reading an MNIST image as 28 rows of 28 pixels, "
        "linear head on the last row",
        "inputs": [s.as_json() for s in INPUTS],
        "outputs": [s.as_json() for s in OUTPUTS],
        "config": {
            "hidden_size": args.hidden_size,
            "num_layers": args.num_layers,
            "dropout": args.dropout,
            "image_size": IMAGE_SIZE,
            "num_classes": NUM_CLASSES,
        },
        "preprocessing": {
            "input": "raw pixels 0..255, white digit on black, 28x28 (MNIST convention)",
            "inside_graph": f"(pixels / 255 - {MNIST_MEAN}) / {MNIST_STD}, then softmax on the logits",
        },
        "training": {
            "dataset": f"MNIST via torchvision ({len(train_images)} train / {len(test_images)} test images)",
            "epochs": epochs,
            "batch_size": args.batch_size,
            "optimizer": "AdamW, weight decay 1e-4",
            "schedule": f"one-cycle, max lr {args.lr}",
            "label_smoothing": 0.05,
            "gradient_clip": 1.0,
            "augmentation": "random affine: ±10°, ±10 % scale, ±2 px shift" if args.augment else "none",
            "seed": args.seed,
            "device": str(device),
            "dry_run": args.dry_run,
            "seconds": round(duration, 1),
        },
        "metrics": metrics,
    }
    write_metadata(out_dir, metadata, "training.digit", argv)

    report_dir = args.report_dir or Path("reports") / NAME / version
    write_json(report_dir / "metrics.json", {"metrics": metrics, "history": history})
    plots.curves(report_dir / "curves.png", history, f"{NAME} v{version}")
    plots.confusion_matrix(
        report_dir / "confusion.png",
        test_labels.numpy(),
        predictions,
        f"{NAME} v{version}: ONNX Runtime, test accuracy {onnx_accuracy:.4f}",
    )
    logger.info(
        "exported %s (ONNX test accuracy %.4f, %.0f s of training); report in %s",
        out_dir,
        onnx_accuracy,
        duration,
        report_dir,
    )


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("Train and export the MNIST digit LSTM.", epochs=12)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        help="folder holding MNIST/raw (downloaded there when missing)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True)
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    train(parser.parse_args(argv), argv)


if __name__ == "__main__":
    main()
