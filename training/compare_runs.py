"""The training half of `python -m training.compare`: the budgets, and the digit and forecasting
sections, each variant trained with the same budget and seed, exported and scored on its export.

Every digit variant is trained by digit_lstm's recipe and functions (`training.digit.fit`); every
forecaster cell by the one loop (`training.loop.train`) with forecast recipe v1's optimisation."""

from __future__ import annotations

import argparse
import itertools
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import loop
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
from training.digit import DigitData, eager_accuracy, export_checked, fit, load_data
from training.digit_recipe import DigitRecipe, describe
from training.evaluate_forecast import EVAL_HISTORY, EVAL_HORIZON, evaluate
from training.export import check_parity, export_model, write_metadata
from training.forecast import INPUTS as FORECAST_INPUTS
from training.forecast import MIN_LENGTH, forecast_loss, outputs, training_batch
from training.forecast_recipes import RECIPES
from training.memory_probe import ProbeBudget
from training.networks import IMAGE_SIZE

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
    dry_run: bool = False

    def digit_recipe(self, seed: int) -> DigitRecipe:
        """digit_lstm's recipe with this budget's network size, epochs and data."""
        return DigitRecipe(
            hidden_size=self.digit_hidden_size,
            num_layers=self.digit_layers,
            epochs=self.digit_epochs,
            batch_size=self.digit_batch_size,
            lr=self.digit_lr,
            train_images=self.digit_train_images,
            test_images=self.digit_test_images,
            seed=seed,
            dry_run=self.dry_run,
        )


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
    dry_run=True,
)
FORECAST_RECIPE = RECIPES["v1"]
"""Whose weight decay, warm-up and gradient clip the forecaster cells train with."""


def train_digit_variant(
    name: str, data: DigitData, budget: Budget, seed: int, out_dir: Path, argv: list[str]
) -> dict[str, Any]:
    """Train, export to `out_dir` (digit_lstm's interface) and score one digit variant."""
    cell, bidirectional = VARIANTS[name]
    recipe = budget.digit_recipe(seed)
    seed_everything(seed)
    network = DigitRecurrent(cell, recipe.hidden_size, recipe.num_layers, recipe.dropout, bidirectional)
    fitted = fit(network, data, recipe, f"digit_{name}")
    seen = min(10_000, len(data.train_images))  # the gap: clean training images vs the test set
    train_accuracy = eager_accuracy(network, data.train_images[:seen], data.train_labels[:seen])
    classifier = DigitVariantClassifier(network).eval()
    parity, predictions = export_checked(classifier, out_dir, data, seed)
    onnx_accuracy = float((predictions == data.test_labels.numpy()).mean())
    metrics = {
        "test_accuracy_onnx": onnx_accuracy,
        "test_accuracy_eager": fitted.history["test accuracy (eager)"][-1],
        "test_images": len(data.test_images),
        "train_accuracy_clean": train_accuracy,
        "train_images_scored": seen,
        "parity_max_relative_difference": parity,
    }
    kind = {"rnn": "tanh RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    description = (
        f"{recipe.num_layers}-layer {'bidirectional ' if bidirectional else ''}{kind} reading an MNIST image "
        "as 28 rows of 28 pixels; linear head on "
        + ("the last row forwards and the first backwards" if bidirectional else "the last row")
    )
    metadata = describe(
        recipe,
        name=f"digit_{name}",
        version="1",
        description=description,
        config={"cell": cell, "bidirectional": bidirectional},
        images=(len(data.train_images), len(data.test_images)),
        device="cpu",
        seconds=sum(fitted.epoch_seconds),
    )
    write_metadata(out_dir, metadata | {"metrics": metrics}, "training.compare", argv)
    logger.info(
        "digit_%s: ONNX test accuracy %.4f, clean train accuracy %.4f", name, onnx_accuracy, train_accuracy
    )
    return {
        "variant": name,
        "cell": cell,
        "bidirectional": bidirectional,
        "parameters": parameter_count(network),
        "recurrent_parameters": recurrent_parameters(
            cell, IMAGE_SIZE, recipe.hidden_size, recipe.num_layers, bidirectional
        ),
        "seconds_per_epoch": fitted.epoch_seconds,
        "test_accuracy": onnx_accuracy,
        "train_accuracy": train_accuracy,
        "train_test_gap": train_accuracy - onnx_accuracy,
        "onnx": str(out_dir / "model.onnx"),
    }


def run_digits(args: argparse.Namespace, budget: Budget, argv: list[str]) -> dict[str, Any]:
    data = load_data(args.data_dir, budget.digit_recipe(args.seed))
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
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=budget.forecast_lr, weight_decay=FORECAST_RECIPE.weight_decay
    )
    total = budget.forecast_epochs * budget.forecast_steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=budget.forecast_lr, total_steps=total, pct_start=FORECAST_RECIPE.warmup
    )
    rng = np.random.default_rng(seed)
    draws = (
        training_batch(rng, budget.forecast_batch_size, EVAL_HISTORY, EVAL_HORIZON, MIN_LENGTH)
        for _ in itertools.count()
    )
    first_batch = next(draws)
    batches = itertools.chain([first_batch], draws)
    epoch_seconds = []
    for epoch in range(1, budget.forecast_epochs + 1):
        label = f"forecast_{cell} epoch {epoch}/{budget.forecast_epochs}"
        trained = loop.train(
            network,
            optimizer,
            batches,
            forecast_loss,
            steps=budget.forecast_steps,
            schedule=schedule,
            clip_norm=FORECAST_RECIPE.gradient_clip,
            label=label,
        )
        epoch_seconds.append(trained.seconds)
        logger.info("%s: loss %.4f, %.0f s", label, trained.losses[-1], trained.seconds)
    network.eval()
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
