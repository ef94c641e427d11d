"""The training half of `python -m training.compare`: the budgets, and the digit and forecasting
sections, each variant trained with the same budget and seed, exported and scored on its export."""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.cells import (
    CELL_TYPES,
    CellForecaster,
    CellType,
    DigitRecurrent,
    DigitVariantClassifier,
    parameter_count,
    recurrent_parameters,
)
from training.common import seed_everything, write_json
from training.data import DataNotFoundError, load_mnist
from training.digit import INPUTS as DIGIT_INPUTS
from training.digit import OUTPUTS as DIGIT_OUTPUTS
from training.digit import eager_accuracy, onnx_predictions, random_affine
from training.evaluate_forecast import EVAL_HISTORY, EVAL_HORIZON, evaluate
from training.export import check_parity, export_model, write_metadata
from training.forecast import INPUTS as FORECAST_INPUTS
from training.forecast import MIN_LENGTH, loss_fn, outputs, training_batch
from training.memory_probe import ProbeBudget
from training.networks import IMAGE_SIZE, MNIST_MEAN, MNIST_STD, NUM_CLASSES

logger = logging.getLogger(__name__)

VARIANTS: dict[str, tuple[CellType, bool]] = {
    "rnn": ("rnn", False),
    "lstm": ("lstm", False),
    "gru": ("gru", False),
    "bilstm": ("lstm", True),
    "bigru": ("gru", True),
}
"""Digit variants: name -> (cell, bidirectional)."""


@dataclass(frozen=True)
class Budget:
    """The same for every variant of a section."""

    digit_epochs: int = 2
    digit_train_images: int = 60_000
    digit_test_images: int = 10_000
    digit_batch_size: int = 128
    digit_hidden_size: int = 128
    digit_layers: int = 2
    digit_lr: float = 3e-3
    forecast_epochs: int = 10
    forecast_steps: int = 100
    forecast_batch_size: int = 128
    forecast_hidden_size: int = 64
    forecast_lr: float = 3e-3
    forecast_eval_series: int = 256
    probe_lengths: tuple[int, ...] = (10, 30, 100, 300, 1000)
    probe: ProbeBudget = field(default_factory=ProbeBudget)
    long_probe_lengths: tuple[int, ...] = (100,)
    long_probe: ProbeBudget = field(default_factory=lambda: ProbeBudget(steps=3000))
    speed_rounds: int = 5
    speed_seconds: float = 2.0
    speed_steps: int = 5


DRY_RUN = Budget(
    digit_epochs=1,
    digit_train_images=512,
    digit_batch_size=32,
    digit_test_images=500,
    forecast_epochs=1,
    forecast_steps=3,
    forecast_eval_series=16,
    probe_lengths=(10, 30),
    probe=ProbeBudget(steps=3, batch_size=16, learning_rates=(1e-2,), eval_sequences=64),
    long_probe_lengths=(10,),
    long_probe=ProbeBudget(steps=6, batch_size=16, learning_rates=(1e-2,), eval_sequences=64),
    speed_rounds=1,
    speed_seconds=0.05,
    speed_steps=1,
)


def digit_metadata(
    name: str,
    budget: Budget,
    bidirectional: bool,
    train_count: int,
    test_count: int,
    seconds: float,
    seed: int,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """metadata.json's fields, as digit_lstm's."""
    cell = VARIANTS[name][0]
    kind = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    direction = "bidirectional " if bidirectional else ""
    return {
        "name": f"digit_{name}",
        "version": "1",
        "task": "digit-classification",
        "description": f"{budget.digit_layers}-layer {direction}{kind} reading "
        "an MNIST image as 28 rows of 28 pixels; linear head on "
        + ("the last row forwards and the first backwards" if bidirectional else "the last row"),
        "inputs": [s.as_json() for s in DIGIT_INPUTS],
        "outputs": [s.as_json() for s in DIGIT_OUTPUTS],
        "config": {
            "cell": cell,
            "bidirectional": bidirectional,
            "hidden_size": budget.digit_hidden_size,
            "num_layers": budget.digit_layers,
            "dropout": 0.1,
            "image_size": IMAGE_SIZE,
            "num_classes": NUM_CLASSES,
        },
        "preprocessing": {
            "input": "raw pixels 0..255, white digit on black, 28x28 (MNIST convention)",
            "inside_graph": f"(pixels / 255 - {MNIST_MEAN}) / {MNIST_STD}, then softmax on the logits",
        },
        "training": {
            "dataset": f"MNIST via torchvision ({train_count} train / {test_count} test images)",
            "epochs": budget.digit_epochs,
            "batch_size": budget.digit_batch_size,
            "optimizer": "AdamW, weight decay 1e-4",
            "schedule": f"one-cycle, max lr {budget.digit_lr}",
            "label_smoothing": 0.05,
            "gradient_clip": 1.0,
            "augmentation": "random affine: ±10°, ±10 % scale, ±2 px shift",
            "seed": seed,
            "device": "cpu",
            "dry_run": budget is DRY_RUN,
            "seconds": round(seconds, 1),
        },
        "metrics": metrics,
    }


def train_digit_variant(
    name: str, data: tuple[torch.Tensor, ...], budget: Budget, seed: int, out_dir: Path, argv: list[str]
) -> dict[str, Any]:
    """Train, export to `out_dir` (digit_lstm's interface) and score one digit variant."""
    train_images, train_labels, test_images, test_labels = data
    cell, bidirectional = VARIANTS[name]
    seed_everything(seed)
    network = DigitRecurrent(cell, budget.digit_hidden_size, budget.digit_layers, 0.1, bidirectional)
    optimizer = torch.optim.AdamW(network.parameters(), lr=budget.digit_lr, weight_decay=1e-4)
    steps = math.ceil(len(train_images) / budget.digit_batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=budget.digit_lr, total_steps=budget.digit_epochs * steps, pct_start=0.15
    )
    generator = torch.Generator().manual_seed(seed)
    epoch_seconds = []
    for epoch in range(1, budget.digit_epochs + 1):
        network.train()
        order = torch.randperm(len(train_images), generator=generator)
        started = time.perf_counter()
        for step in range(steps):
            index = order[step * budget.digit_batch_size : (step + 1) * budget.digit_batch_size]
            images = random_affine(train_images[index].to(torch.float32), generator)
            loss = F.cross_entropy(network(images), train_labels[index], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if (step + 1) % 100 == 0:
                logger.info(
                    "digit_%s epoch %d step %d/%d: loss %.4f", name, epoch, step + 1, steps, loss.item()
                )
        epoch_seconds.append(time.perf_counter() - started)
        logger.info("digit_%s epoch %d: %.0f s", name, epoch, epoch_seconds[-1])
    seen = min(10_000, len(train_images))  # the gap: clean training images vs the test set
    train_accuracy = eager_accuracy(network, train_images[:seen], train_labels[:seen], torch.device("cpu"))
    test_accuracy = eager_accuracy(network, test_images, test_labels, torch.device("cpu"))
    classifier = DigitVariantClassifier(network).eval()
    export_model(classifier, (test_images[:2].to(torch.float32),), DIGIT_INPUTS, DIGIT_OUTPUTS, out_dir)
    cases = [(torch.rand(b, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 255,) for b in (1, 37)]
    parity = check_parity(out_dir, classifier, cases)
    onnx_accuracy = float(
        (onnx_predictions(out_dir / "model.onnx", test_images.numpy()) == test_labels.numpy()).mean()
    )
    metrics = {
        "test_accuracy_onnx": onnx_accuracy,
        "test_accuracy_eager": test_accuracy,
        "test_images": len(test_images),
        "train_accuracy_clean": train_accuracy,
        "train_images_scored": seen,
        "parity_max_relative_difference": parity,
    }
    metadata = digit_metadata(
        name, budget, bidirectional, len(train_images), len(test_images), sum(epoch_seconds), seed, metrics
    )
    write_metadata(out_dir, metadata, "training.compare", argv)
    logger.info(
        "digit_%s: ONNX test accuracy %.4f, clean train accuracy %.4f", name, onnx_accuracy, train_accuracy
    )
    return {
        "variant": name,
        "cell": cell,
        "bidirectional": bidirectional,
        "parameters": parameter_count(network),
        "recurrent_parameters": recurrent_parameters(
            cell, IMAGE_SIZE, budget.digit_hidden_size, budget.digit_layers, bidirectional
        ),
        "seconds_per_epoch": epoch_seconds,
        "test_accuracy": onnx_accuracy,
        "train_accuracy": train_accuracy,
        "train_test_gap": train_accuracy - onnx_accuracy,
        "onnx": str(out_dir / "model.onnx"),
    }


def run_digits(args: argparse.Namespace, budget: Budget, argv: list[str]) -> dict[str, Any]:
    try:
        train_images, train_labels = load_mnist(args.data_dir, train=True)
        test_images, test_labels = load_mnist(args.data_dir, train=False)
    except DataNotFoundError as error:
        raise SystemExit(str(error)) from error
    data = (
        train_images[: budget.digit_train_images],
        train_labels[: budget.digit_train_images],
        test_images[: budget.digit_test_images],
        test_labels[: budget.digit_test_images],
    )
    results: dict[str, Any] = {}
    for name in args.variants:
        out_dir = args.report_dir / "models" / f"digit_{name}" / "1"
        shutil.rmtree(out_dir, ignore_errors=True)
        results[name] = train_digit_variant(name, data, budget, args.seed, out_dir, argv)
        partial = {"budget": asdict(budget), "seed": args.seed, "variants": results}
        write_json(args.report_dir / "digits.partial.json", partial)  # kept should a later variant fail
    return {"budget": asdict(budget), "seed": args.seed, "variants": results}


def train_forecaster(cell: CellType, budget: Budget, seed: int, out_dir: Path) -> dict[str, Any]:
    """Train CellForecaster with `cell` on the v1 sine family, export it, run protocol v1 on the export."""
    seed_everything(seed)
    network = CellForecaster(cell, budget.forecast_hidden_size, max_horizon=EVAL_HORIZON)
    optimizer = torch.optim.AdamW(network.parameters(), lr=budget.forecast_lr, weight_decay=1e-4)
    total = budget.forecast_epochs * budget.forecast_steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=budget.forecast_lr, total_steps=total, pct_start=0.1
    )
    rng = np.random.default_rng(seed)
    first_batch = None
    epoch_seconds = []
    for epoch in range(1, budget.forecast_epochs + 1):
        network.train()
        started = time.perf_counter()
        for _ in range(budget.forecast_steps):
            batch = training_batch(rng, budget.forecast_batch_size, EVAL_HISTORY, EVAL_HORIZON, MIN_LENGTH)
            first_batch = first_batch or batch
            values, mask, target, amplitude = batch
            mean, std = network(values, mask)
            loss = loss_fn(mean, std, target, amplitude)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            schedule.step()
        epoch_seconds.append(time.perf_counter() - started)
        logger.info("forecast %s epoch %d: loss %.4f, %.0f s", cell, epoch, loss.item(), epoch_seconds[-1])
    network.eval()
    assert first_batch is not None
    values, mask, target, _ = first_batch
    full = mask[:, 0] == 1  # the rows with the whole 256-value history, as the protocol's
    with torch.no_grad():
        train_mae = float((network(values[full], mask[full])[0] - target[full]).abs().mean())
    example = (torch.randn(2, EVAL_HISTORY), torch.ones(2, EVAL_HISTORY))
    export_model(network, example, FORECAST_INPUTS, outputs(EVAL_HORIZON), out_dir)
    generator = torch.Generator().manual_seed(seed)
    cases = [
        (torch.randn(b, EVAL_HISTORY, generator=generator) * 3 + 1, torch.ones(b, EVAL_HISTORY))
        for b in (1, 37)
    ]
    parity = check_parity(out_dir, network, cases)
    report = evaluate(out_dir / "model.onnx", EVAL_HISTORY, network.patch_size, budget.forecast_eval_series)
    return {
        "cell": cell,
        "parameters": parameter_count(network),
        "recurrent_parameters": recurrent_parameters(
            cell, 2 * network.patch_size, budget.forecast_hidden_size, num_layers=1
        ),
        "seconds_per_epoch": epoch_seconds,
        "protocol_v1": report,
        "train_mae_first_batch": train_mae,
        "test_mae": report["model"]["mae"],
        "test_mase": report["model"]["mase"],
        "train_test_gap": train_mae - report["model"]["mae"],
        "parity_max_relative_difference": parity,
        "onnx": str(out_dir / "model.onnx"),
    }


def run_forecast(args: argparse.Namespace, budget: Budget) -> dict[str, Any]:
    results = {}
    for cell in CELL_TYPES:
        out_dir = args.report_dir / "models" / f"forecast_{cell}" / "1"
        shutil.rmtree(out_dir, ignore_errors=True)
        results[cell] = train_forecaster(cell, budget, args.seed, out_dir)
    return {"budget": asdict(budget), "seed": args.seed, "cells": results}
