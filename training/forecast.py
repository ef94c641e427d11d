"""Train the series forecaster, export it, and evaluate the export.

    python -m training.forecast --out models                 # recipe v2 (the default): HarmonicGRU
    python -m training.forecast --recipe v1 --out models     # v1's recipe: SeriesGRU on P 16–64

Recipe v1 trains `SeriesGRU` (context 256) on the v1 family (P 16–64, s ≤ 0.1). Recipe v2 trains
`HarmonicGRU` (context 1024) on the wider family (P 4–256, s ≤ 0.2), then scales its std, one factor
per step, so that 95 % intervals cover 95 % of a held-out validation draw. Both are evaluated on
protocol v1 and protocol v2 (`training.evaluate_forecast`).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from service.series import interval, normal_quantile, pad_left
from training import evaluate_forecast, loop, plots
from training.common import base_parser, pick_device, seed_everything, setup_logging, write_json
from training.data import V1_FAMILY, SeriesFamily, seed_curve, sine_series
from training.evaluate_forecast import EVAL_HORIZON, EVAL_SEED, evaluate, run_onnx
from training.export import TensorSpec, check_parity, export_model, next_version, write_metadata
from training.forecast_recipes import MIN_LENGTH, RECIPES, ForecastRecipe, describe
from training.networks import HarmonicGRU, SeriesGRU
from training.recipes import with_overrides

logger = logging.getLogger(__name__)

NAME = "sine_gru"
CONTEXT_LENGTH = 1024
LEVELS = (80.0, 95.0)
INPUTS = [
    TensorSpec("series", ("batch", "time"), "raw series values, right-aligned, zero where mask is 0"),
    TensorSpec("mask", ("batch", "time"), "1 where a value was observed, 0 for left padding"),
]
# Also what other modules import from here; `evaluate` is protocol v1 (training.evaluate_forecast).
__all__ = [
    "CONTEXT_LENGTH",
    "INPUTS",
    "MIN_LENGTH",
    "NAME",
    "evaluate",
    "loss_fn",
    "main",
    "outputs",
    "training_batch",
]


def outputs(max_horizon: int) -> list[TensorSpec]:
    return [
        TensorSpec("mean", ("batch", max_horizon), "forecast of the next values, in the series' units"),
        TensorSpec("std", ("batch", max_horizon), "standard deviation of each step's Gaussian forecast"),
    ]


def training_batch(
    rng: np.random.Generator,
    size: int,
    context: int,
    horizon: int,
    min_length: int,
    patch_size: int = 8,
    family: SeriesFamily = V1_FAMILY,
    lengths: str = "uniform",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Histories of mixed lengths (half of them full context), their targets and amplitudes."""
    data = sine_series(rng, size, context + horizon, family)
    full = rng.random(size) < 0.5
    if lengths == "uniform":
        shorter = rng.integers(min_length, context + 1, size)
    else:
        shorter = np.exp(rng.uniform(np.log(min_length), np.log(context + 1), size)).astype(int)
    cut = np.where(full, context, shorter)
    windows = [row[context - n : context] for row, n in zip(data.values, cut, strict=True)]
    values, mask = pad_left(windows, patch_size)
    target = data.values[:, context:]
    return (
        torch.from_numpy(values),
        torch.from_numpy(mask),
        torch.from_numpy(target),
        torch.from_numpy(data.amplitude.astype(np.float32)),
    )


def loss_fn(
    mean: torch.Tensor, std: torch.Tensor, target: torch.Tensor, amplitude: torch.Tensor
) -> torch.Tensor:
    """Amplitude-scaled squared error for the mean, plus the Gaussian negative log-likelihood for the
    std given the (detached) mean: a joint NLL let the spread swallow the error and stalled the mean."""
    squared = (((mean - target) / amplitude[:, None]) ** 2).mean()
    nll = torch.nn.functional.gaussian_nll_loss(mean.detach(), target, std * std, reduction="none")
    return squared + (nll + torch.log(amplitude)[:, None]).mean()


def build_network(recipe: ForecastRecipe) -> nn.Module:
    sizes = {
        "patch_size": recipe.patch_size,
        "hidden_size": recipe.hidden_size,
        "max_horizon": recipe.max_horizon,
    }
    if recipe.network == "SeriesGRU":
        return SeriesGRU(num_layers=recipe.num_layers, **sizes)
    return HarmonicGRU(num_layers=recipe.num_layers, context_length=recipe.context_length, **sizes)


def batch_for(recipe: ForecastRecipe, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, ...]:
    return training_batch(
        rng, size, recipe.context_length, recipe.max_horizon, MIN_LENGTH, recipe.patch_size, recipe.family,
        recipe.lengths,
    )  # fmt: skip


def forecast_loss(network: nn.Module, batch: tuple[torch.Tensor, ...]) -> loop.StepLoss:
    values, mask, target, amplitude = batch
    mean, std = network(values, mask)
    return loop.StepLoss(loss_fn(mean, std, target, amplitude))


def validate(network: nn.Module, val: tuple[torch.Tensor, ...]) -> tuple[float, float]:
    network.eval()
    with torch.no_grad():
        values, mask, target, amplitude = val
        mean, std = network(values, mask)
        loss = loss_fn(mean, std, target, amplitude).item()
        mae = (mean[:, :EVAL_HORIZON] - target[:, :EVAL_HORIZON]).abs().mean().item()
    return loss, mae


def calibrate_std(network: HarmonicGRU, val: tuple[torch.Tensor, ...], level: float = 95.0) -> list[float]:
    """Set `std_calibration` so that the central `level` % interval covers `level` % of `val`'s
    values at each step; returns the factors."""
    network.eval()
    network.std_calibration.fill_(1.0)
    with torch.no_grad():
        values, mask, target, _ = val
        mean, std = network(values, mask)
        ratio = ((mean - target).abs() / std).numpy()
    factors = np.quantile(ratio, level / 100.0, axis=0) / normal_quantile(level)
    network.std_calibration.copy_(torch.from_numpy(factors.astype(np.float32)))
    return [round(float(f), 4) for f in factors]


def export_checked(network: nn.Module, out_dir: Path, recipe: ForecastRecipe) -> float:
    """Export to ONNX and TorchScript; the largest relative difference from the eager model."""
    generator = torch.Generator().manual_seed(recipe.seed)
    patch, context = recipe.patch_size, recipe.context_length
    example = tuple(torch.from_numpy(a) for a in pad_left([np.linspace(0, 1, 40, dtype=np.float32)], patch))
    export_model(network, example, INPUTS, outputs(recipe.max_horizon), out_dir)
    cases = []
    for batch, lengths in ((1, [16]), (1, [context]), (37, [16, 100, context, 37])):
        windows = [
            np.asarray(torch.randn(lengths[i % len(lengths)], generator=generator) * 3 + 1)
            for i in range(batch)
        ]
        cases.append(tuple(torch.from_numpy(a) for a in pad_left(windows, patch)))
    return check_parity(out_dir, network, cases)


def plot_examples(path: Path, onnx_path: Path, context: int, patch: int) -> float:
    """Forecast pictures for a few held-out series and the seed curve; returns the seed curve's MAE."""
    history, truth = seed_curve(points=100, horizon=EVAL_HORIZON)
    data = sine_series(np.random.default_rng(EVAL_SEED), 5, 256 + EVAL_HORIZON)
    histories = [history] + [row[:256] for row in data.values]
    truths = [truth] + [row[256:] for row in data.values]
    mean, std = run_onnx(onnx_path, histories, context, patch)
    mean, std = mean[:, :EVAL_HORIZON], std[:, :EVAL_HORIZON]
    seed_mae = float(np.abs(mean[0] - truth).mean())
    examples = []
    for i, (h, t) in enumerate(zip(histories, truths, strict=True)):
        lower, upper = interval(mean[i], std[i], 95.0)
        title = (
            f"seed curve sin(3x)+x, MAE {seed_mae:.3f}"
            if i == 0
            else (f"held-out #{i - 1}: P={data.period[i - 1]:.1f}, MAE {np.abs(mean[i] - t).mean():.3f}")
        )
        examples.append((title, h, t, mean[i], lower, upper))
    plots.forecasts(path, examples, 95.0)
    return seed_mae


def fit(network: nn.Module, recipe: ForecastRecipe, device: torch.device) -> dict[str, list[float]]:
    """Train for the recipe's epochs on fresh batches; the losses and validation scores of each epoch."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=recipe.lr,
        total_steps=recipe.epochs * recipe.steps_per_epoch,
        pct_start=recipe.warmup,
    )
    # A fixed validation draw (not a test set) for the curves.
    val = batch_for(recipe, np.random.default_rng(EVAL_SEED + 1), recipe.validation_series)
    rng = np.random.default_rng(recipe.seed)

    def batches() -> Iterator[tuple[torch.Tensor, ...]]:
        while True:
            yield tuple(t.to(device) for t in batch_for(recipe, rng, recipe.batch_size))

    stream = batches()
    history: dict[str, list[float]] = {"train loss": [], "validation loss": [], "validation MAE (h=32)": []}
    for epoch in range(1, recipe.epochs + 1):
        label = f"{NAME} epoch {epoch}/{recipe.epochs}"
        trained = loop.train(
            network,
            optimizer,
            stream,
            forecast_loss,
            steps=recipe.steps_per_epoch,
            schedule=schedule,
            clip_norm=recipe.gradient_clip,
            label=label,
        )
        val_loss, val_mae = validate(network, tuple(t.to(device) for t in val))
        for values, value in zip(history.values(), (trained.mean_loss, val_loss, val_mae), strict=True):
            values.append(value)
        logger.info(
            "%s: train loss %.4f, validation loss %.4f, validation MAE %.4f",
            label,
            trained.mean_loss,
            val_loss,
            val_mae,
        )
    return history


def evaluate_export(onnx_path: Path, recipe: ForecastRecipe, report_dir: Path) -> dict[str, Any]:
    """Protocols v1 and v2 on the export, the seed curve (its picture into `report_dir`), missed targets."""
    context, patch = recipe.context_length, recipe.patch_size
    report = evaluate(onnx_path, context, patch, recipe.eval_series)
    report["seed_curve_mae"] = plot_examples(report_dir / "forecasts.png", onnx_path, context, patch)
    per_set = recipe.protocol_v2_series
    protocol_v2: dict[str, Any] = {
        "description": evaluate_forecast.protocol_v2_description() | {"series_per_set": per_set},
        "model": evaluate_forecast.evaluate_v2(onnx_path, context, patch, per_set),
        "seasonal_naive": evaluate_forecast.seasonal_naive_v2(per_set),
    }
    protocol_v2["missed_targets"] = evaluate_forecast.missed_targets(
        protocol_v2["model"], report["seed_curve_mae"]
    )
    report["protocol_v2"] = protocol_v2
    return report


def train(recipe: ForecastRecipe, args: argparse.Namespace, argv: list[str]) -> None:
    """Train by `recipe`, calibrate, export into args.out and evaluate; reports into args.report_dir."""
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    seed_everything(recipe.seed)
    network = build_network(recipe).to(device)
    started = time.perf_counter()
    history = fit(network, recipe, device)
    duration = time.perf_counter() - started
    network = network.cpu().eval()
    calibration = None
    if recipe.calibrate_std:
        assert isinstance(network, HarmonicGRU)
        held = batch_for(recipe, np.random.default_rng(EVAL_SEED + 2), recipe.calibration_series)
        calibration = calibrate_std(network, held)
        logger.info("std calibration (steps 1, 8, 32, 128): %s", [calibration[i] for i in (0, 7, 31, 127)])

    version = args.version or next_version(args.out / NAME)
    out_dir = args.out / NAME / version
    parity = export_checked(network, out_dir, recipe)
    report_dir = args.report_dir or Path("reports") / NAME / version
    report = evaluate_export(out_dir / "model.onnx", recipe, report_dir)
    report["parity_max_relative_difference"] = parity
    metadata = describe(recipe, version, str(device), args.threads, duration, calibration) | {
        "inputs": [s.as_json() for s in INPUTS],
        "outputs": [s.as_json() for s in outputs(recipe.max_horizon)],
    }
    write_metadata(out_dir, metadata | {"metrics": report}, "training.forecast", argv)
    write_json(report_dir / "metrics.json", {"metrics": report, "history": history})
    plots.curves(report_dir / "curves.png", history, f"{NAME} v{version}")
    protocol_v2 = report["protocol_v2"]
    logger.info(
        "exported %s in %.0f s of training; protocol v1: %s; protocol v2: %s; missed: %s",
        out_dir, duration, report["model"], protocol_v2["model"], protocol_v2["missed_targets"],
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    epochs = ", ".join(f"{name} {recipe.epochs}" for name, recipe in RECIPES.items())
    parser = base_parser("Train and export the sine-series GRU forecaster.", epochs=f"the recipe's: {epochs}")
    parser.add_argument(
        "--recipe", choices=sorted(RECIPES), default="v2",
        help="v2 (default): HarmonicGRU, context 1024, P 4–256, s ≤ 0.2, calibrated std; "
        "v1: SeriesGRU, context 256, P 16–64, s ≤ 0.1 (how version 1 was made)",
    )  # fmt: skip
    for option, kind in (
        ("steps_per_epoch", int),
        ("batch_size", int),
        ("lr", float),
        ("hidden_size", int),
        ("patch_size", int),
        ("num_layers", int),
        ("max_horizon", int),
    ):
        parser.add_argument(f"--{option.replace('_', '-')}", type=kind, help="default: the recipe's")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    recipe = RECIPES[args.recipe]
    train(with_overrides(recipe.dry() if args.dry_run else recipe, args), args, argv)


if __name__ == "__main__":
    main()
