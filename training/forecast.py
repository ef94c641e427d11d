"""Train the series GRU on the sine-with-trend family, export it, and evaluate the export.

    python -m training.forecast --out models

Evaluation protocol: EVAL_SERIES held-out series from EVAL_SEED (never a training seed), history
EVAL_HISTORY, horizon EVAL_HORIZON; MAE, RMSE, MASE (seasonal-naive scale, m = round(P)), sMAPE and
80 %/95 % interval coverage, next to the last-value and seasonal-naive baselines.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from service.series import interval, pad_left, recent_window
from training import plots
from training.common import base_parser, pick_device, seed_everything, setup_logging, write_json
from training.data import seed_curve, sine_series
from training.export import TensorSpec, check_parity, export_model, next_version, onnx_session, write_metadata
from training.metrics import coverage, last_value, point_metrics, seasonal_naive
from training.networks import SeriesGRU

logger = logging.getLogger(__name__)

NAME = "sine_gru"
CONTEXT_LENGTH = 256
MIN_LENGTH = 16
MAX_LENGTH = 4096
EVAL_SEED = 20_261_123
EVAL_SERIES = 256
EVAL_HISTORY = 256
EVAL_HORIZON = 32
LEVELS = (80.0, 95.0)
INPUTS = [
    TensorSpec("series", ("batch", "time"), "raw series values, right-aligned, zero where mask is 0"),
    TensorSpec("mask", ("batch", "time"), "1 where a value was observed, 0 for left padding"),
]


def outputs(max_horizon: int) -> list[TensorSpec]:
    return [
        TensorSpec("mean", ("batch", max_horizon), "forecast of the next values, in the series' units"),
        TensorSpec("std", ("batch", max_horizon), "standard deviation of each step's Gaussian forecast"),
    ]


def training_batch(
    rng: np.random.Generator, size: int, context: int, horizon: int, min_length: int, patch_size: int = 8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Histories of mixed lengths (half of them full context), their targets and amplitudes."""
    data = sine_series(rng, size, context + horizon)
    full = rng.random(size) < 0.5
    lengths = np.where(full, context, rng.integers(min_length, context + 1, size))
    windows = [row[context - n : context] for row, n in zip(data.values, lengths, strict=True)]
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


def run_onnx(
    path: Path, histories: list[np.ndarray], context: int, patch: int
) -> tuple[np.ndarray, np.ndarray]:
    session = onnx_session(path)
    values, mask = pad_left([recent_window(h, context) for h in histories], patch)
    mean, std = session.run(["mean", "std"], {"series": values, "mask": mask})
    return mean, std


def evaluate(path: Path, context: int, patch: int, series: int = EVAL_SERIES) -> dict[str, Any]:
    """The evaluation protocol on the exported model through ONNX Runtime."""
    data = sine_series(np.random.default_rng(EVAL_SEED), series, EVAL_HISTORY + EVAL_HORIZON)
    history, truth = data.values[:, :EVAL_HISTORY], data.values[:, EVAL_HISTORY:].astype(np.float64)
    season = np.round(data.period).astype(int)
    mean, std = run_onnx(path, list(history), context, patch)
    mean, std = mean[:, :EVAL_HORIZON].astype(np.float64), std[:, :EVAL_HORIZON].astype(np.float64)
    model = point_metrics(history, truth, mean, season)
    for level in LEVELS:
        model[f"coverage_{level:g}"] = coverage(truth, mean, std, level)
    return {
        "protocol": {
            "series": series,
            "seed": EVAL_SEED,
            "history": EVAL_HISTORY,
            "horizon": EVAL_HORIZON,
            "mase_season": "round(P)",
        },
        "model": model,
        "last_value": point_metrics(history, truth, last_value(history, EVAL_HORIZON), season),
        "seasonal_naive": point_metrics(
            history, truth, seasonal_naive(history, season, EVAL_HORIZON), season
        ),
        "noise_floor_mae": float(np.mean(data.noise_sd) * math.sqrt(2 / math.pi)),
    }


def plot_examples(path: Path, onnx_path: Path, context: int, patch: int) -> float:
    """Forecast pictures for a few held-out series and the seed curve; returns the seed curve's MAE."""
    history, truth = seed_curve(points=100, horizon=EVAL_HORIZON)
    data = sine_series(np.random.default_rng(EVAL_SEED), 5, EVAL_HISTORY + EVAL_HORIZON)
    histories = [history] + [row[:EVAL_HISTORY] for row in data.values]
    truths = [truth] + [row[EVAL_HISTORY:] for row in data.values]
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


def train(args: Any, argv: list[str]) -> None:
    device = pick_device(args.device)
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    epochs = 1 if args.dry_run else args.epochs
    steps = 5 if args.dry_run else args.steps_per_epoch
    network = SeriesGRU(
        patch_size=args.patch_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        max_horizon=args.max_horizon,
    ).to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=epochs * steps, pct_start=0.1
    )
    validation_rng_seed = EVAL_SEED + 1  # a fixed validation set for the curves, not the test set
    val = training_batch(
        np.random.default_rng(validation_rng_seed),
        512,
        CONTEXT_LENGTH,
        args.max_horizon,
        MIN_LENGTH,
        args.patch_size,
    )
    history: dict[str, list[float]] = {"train loss": [], "validation loss": [], "validation MAE (h=32)": []}
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        network.train()
        total = 0.0
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{epochs}", unit="step", mininterval=2.0)
        for step in bar:
            values, mask, target, amplitude = (
                t.to(device)
                for t in training_batch(
                    rng, args.batch_size, CONTEXT_LENGTH, args.max_horizon, MIN_LENGTH, args.patch_size
                )
            )
            mean, std = network(values, mask)
            loss = loss_fn(mean, std, target, amplitude)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            total += loss.item()
            bar.set_postfix(loss=f"{total / (step + 1):.4f}")
        network.eval()
        with torch.no_grad():
            values, mask, target, amplitude = (t.to(device) for t in val)
            mean, std = network(values, mask)
            val_loss = loss_fn(mean, std, target, amplitude).item()
            val_mae = (mean[:, :EVAL_HORIZON] - target[:, :EVAL_HORIZON]).abs().mean().item()
        history["train loss"].append(total / steps)
        history["validation loss"].append(val_loss)
        history["validation MAE (h=32)"].append(val_mae)
        logger.info(
            "epoch %d: train loss %.4f, validation loss %.4f, validation MAE %.4f",
            epoch,
            total / steps,
            val_loss,
            val_mae,
        )
    duration = time.perf_counter() - started

    network = network.cpu().eval()
    version = args.version or next_version(args.out / NAME)
    out_dir = args.out / NAME / version
    generator = torch.Generator().manual_seed(args.seed)
    example = tuple(
        torch.from_numpy(a) for a in pad_left([np.linspace(0, 1, 40, dtype=np.float32)], args.patch_size)
    )
    export_model(network, example, INPUTS, outputs(args.max_horizon), out_dir)
    parity_cases = []
    for batch, lengths in ((1, [16]), (1, [256]), (37, [16, 100, 256, 37])):
        windows = [
            np.asarray(torch.randn(lengths[i % len(lengths)], generator=generator) * 3 + 1)
            for i in range(batch)
        ]
        parity_cases.append(tuple(torch.from_numpy(a) for a in pad_left(windows, args.patch_size)))
    parity = check_parity(out_dir, network, parity_cases)

    onnx_path = out_dir / "model.onnx"
    report = evaluate(onnx_path, CONTEXT_LENGTH, args.patch_size, 32 if args.dry_run else EVAL_SERIES)
    report_dir = args.report_dir or Path("reports") / NAME / version
    report["seed_curve_mae"] = plot_examples(
        report_dir / "forecasts.png", onnx_path, CONTEXT_LENGTH, args.patch_size
    )
    report["parity_max_relative_difference"] = parity
    metadata = {
        "name": NAME,
        "version": version,
        "task": "forecasting",
        "description": "GRU forecaster: linear trend removed in-graph, residual read in patches by a "
        "bias-free 2-layer GRU, Gaussian mean and std for each of the next max_horizon steps",
        "inputs": [s.as_json() for s in INPUTS],
        "outputs": [s.as_json() for s in outputs(args.max_horizon)],
        "config": {
            "context_length": CONTEXT_LENGTH,
            "patch_size": args.patch_size,
            "max_horizon": args.max_horizon,
            "min_length": MIN_LENGTH,
            "max_length": MAX_LENGTH,
            "hidden_size": args.hidden_size,
            "num_layers": args.num_layers,
            "intervals": "Gaussian: mean ± z(level)·std",
        },
        "preprocessing": {
            "input": "raw series values; the service keeps the newest context_length values and left-pads "
            "them to a multiple of patch_size with service.series.pad_left",
            "inside_graph": "masked least-squares line removed and re-added; residual scaled by its std",
        },
        "training": {
            "dataset": "synthetic: y_t = A·sin(2πt/P + φ) + (k·A/P)·t + c + ε (training.data.sine_series)",
            "epochs": epochs,
            "steps_per_epoch": steps,
            "batch_size": args.batch_size,
            "optimizer": "AdamW, weight decay 1e-4",
            "schedule": f"one-cycle, max lr {args.lr}",
            "loss": "amplitude-scaled MSE (mean) + Gaussian NLL (std, mean detached)",
            "seed": args.seed,
            "device": str(device),
            "dry_run": args.dry_run,
            "seconds": round(duration, 1),
        },
        "metrics": report,
    }
    write_metadata(out_dir, metadata, "training.forecast", argv)
    write_json(report_dir / "metrics.json", {"metrics": report, "history": history})
    plots.curves(report_dir / "curves.png", history, f"{NAME} v{version}")
    model = report["model"]
    logger.info(
        "exported %s: MAE %.3f, MASE %.3f, coverage 80/95 %.3f/%.3f, seed curve MAE %.3f (%.0f s)",
        out_dir,
        model["mae"],
        model["mase"],
        model["coverage_80"],
        model["coverage_95"],
        report["seed_curve_mae"],
        duration,
    )


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("Train and export the sine-series GRU forecaster.", epochs=30)
    parser.add_argument("--steps-per-epoch", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--max-horizon", type=int, default=128)
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    train(parser.parse_args(argv), argv)


if __name__ == "__main__":
    main()
