"""Train forecaster v3 (`series_gru`, `training.series_net.BacktestGRU`), export it and evaluate the export.

    python -m training.series_train --out models            # about 11 minutes of training on 2 CPU cores
    python -m training.series_train --dry-run --out /tmp/m   # seconds
    python -m training.series_train --out models --weights-from models/series_gru/1   # no training

Only the GRU and its spread head learn; the classical candidates and the backtest are fixed arithmetic.
`--weights-from` takes those learned weights from an earlier export instead of training, and exports
them in this code's graph (a new version that computes the same forecasts differently).

Every batch is drawn afresh from `training.series_data.real_like_batch` (generated series that behave as
real ones do, and the sine family). The loss (`loss_of`) is the Gaussian negative log-likelihood of the
std on the sine family's rows, and the squared log spread factor on the other rows. Real series never
reach training: the exported model is scored on the
real-data protocol's four sets (`training.real_series`) with the season given and
detected, and on the sine family's protocol v2, and those scores go into its metadata.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training import evaluate_forecast, loop, series_data, series_net
from training.common import seed_everything, setup_logging
from training.export import TensorSpec, check_parity, export_model, next_version, write_metadata
from training.forecast_recipes import MAX_LENGTH, MIN_LENGTH

logger = logging.getLogger(__name__)

NAME = "series_gru"
CONTEXT_LENGTH = 1024
INPUTS = [
    TensorSpec("series", ("batch", "time"), "raw series values, right-aligned, zero where mask is 0"),
    TensorSpec(
        "mask", ("batch", "time"), "1 where a value was observed, 0 for left padding or a missing value"
    ),
    TensorSpec("season", ("batch", 1), "season length hint: 0 unknown (detected), 1 none, m ≥ 2 the period"),
]


@dataclass(frozen=True)
class SeriesRecipe:
    """How `series_gru` is trained: AdamW, one-cycle schedule, fresh generated batches each step."""

    steps: int = 3000
    batch_size: int = 48
    lr: float = 2e-3
    weight_decay: float = 1e-4
    hidden_size: int = 64
    patch_size: int = 16
    window: int = 256
    max_horizon: int = 128
    sine_share: float = 0.15
    seed: int = 0
    dry_run: bool = False

    def dry(self) -> SeriesRecipe:
        return replace(self, steps=3, batch_size=8, dry_run=True)


def outputs(max_horizon: int) -> list[TensorSpec]:
    return [
        TensorSpec("mean", ("batch", max_horizon), "forecast of the next values, in the series' units"),
        TensorSpec("std", ("batch", max_horizon), "standard deviation of each step's Gaussian forecast"),
    ]


def batches(recipe: SeriesRecipe, rng: np.random.Generator) -> Any:
    """Fresh generated batches: history, mask, season hint, future, and which rows are the sine family's."""
    while True:
        draw = series_data.real_like_batch(
            rng, recipe.batch_size, CONTEXT_LENGTH, recipe.max_horizon, sine_share=recipe.sine_share
        )
        sine = np.array([kind == series_data.SINE for kind in draw.kind], dtype=np.float32)
        yield tuple(torch.from_numpy(a) for a in (draw.history, draw.mask, draw.season, draw.future, sine))


LOSS_CAP = 100.0
"""Each step's NLL, in units of the history's mean absolute difference, counts at most this."""
ANCHOR = 3.0
"""How strongly the spread factor of a row outside the sine family is held at 1 (log-factor 0)."""


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> loop.StepLoss:
    """The Gaussian NLL of the std (scale-free: in units of the history's mean absolute difference) on the
    sine family's rows, and the squared log-factor on the other rows.

    The backtest's spread, widened by a width fitted on real validation series, is what the other rows
    keep: generated series are more regular than real ones, and a spread learned on them is too narrow
    for real series (measured: 95 % bands covering 0.78 of real validation values). A sine plus noise is
    the one family whose backtest errors are its true errors; there the GRU learns how far to narrow."""
    assert isinstance(model, series_net.BacktestGRU)
    series, mask, season, future, sine = batch
    mean, std, log_factor = model.parts(series, mask, season)
    both = mask[:, 1:] * mask[:, :-1]
    scale = ((series[:, 1:] - series[:, :-1]).abs() * both).sum(dim=1, keepdim=True) / both.sum(
        dim=1, keepdim=True
    ).clamp_min(1.0)
    scale = scale.clamp_min(1e-3 * (series.abs().max(dim=1, keepdim=True).values + 1e-6))
    sd = (std / scale).clamp_min(1e-4)
    nll = (torch.log(sd) + 0.5 * ((future - mean) / scale / sd) ** 2).clamp(max=LOSS_CAP).mean(dim=1)
    anchor = ANCHOR * (log_factor * log_factor).mean(dim=1)
    loss = (sine * nll + (1 - sine) * anchor).mean()
    return loop.StepLoss(loss, examples=len(series))


def fit(network: series_net.BacktestGRU, recipe: SeriesRecipe) -> list[float]:
    learned = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(learned, lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=recipe.steps)
    done = loop.train(
        network,
        optimizer,
        batches(recipe, np.random.default_rng(recipe.seed)),
        loss_of,
        steps=recipe.steps,
        schedule=schedule,
        label=NAME,
    )
    return done.losses


def parity_cases(rng: np.random.Generator) -> list[tuple[torch.Tensor, ...]]:
    """Batches of several lengths, with left padding, missing values and every kind of season hint."""
    draw = series_data.real_like_batch(rng, 6, CONTEXT_LENGTH, 128)
    short = draw.history[:, -64:].copy(), draw.mask[:, -64:].copy()
    hints = np.array([[0.0], [1.0], [4.0], [12.0], [0.0], [7.0]], dtype=np.float32)
    return [
        tuple(torch.from_numpy(a) for a in (draw.history, draw.mask, draw.season)),
        tuple(torch.from_numpy(a) for a in (*short, hints)),
    ]


def real_scores(path: Path, patch: int) -> dict[str, Any]:
    """The real-data protocol's summary for the exported model, per set, with the season given and
    detected, scored as `training.evaluate_real` scores the served model (the baselines' scores are
    `python -m training.evaluate_forecast --real`'s)."""
    from training.evaluate_real import gaussian_forecast, reference, scores, summary
    from training.real_series import SETS, windows

    report: dict[str, Any] = {}
    for set_name in SETS:
        cut = windows(set_name)
        for label, given in (("season given", True), ("season detected", False)):
            seasons = [float(w.series.season) if given else 0.0 for w in cut]
            histories = [w.history for w in cut]
            means, stds = evaluate_forecast.run_onnx(path, histories, CONTEXT_LENGTH, patch, seasons=seasons)
            rows = []
            for w, mean, std in zip(cut, means, stds, strict=True):
                scale, naive_mase = reference(w)
                rows.append(scores(w, gaussian_forecast(w, mean, std, NAME), naive_mase, scale))
            report.setdefault(set_name, {})[label] = summary(rows)
    return report


def sine_scores(path: Path, patch: int) -> dict[str, Any]:
    """Protocol v2 (the sine family) and the seed curve, as forecaster v2 was judged."""
    report = evaluate_forecast.evaluate_v2(path, CONTEXT_LENGTH, patch)
    seed = evaluate_forecast.seed_curve_mae(path, CONTEXT_LENGTH, patch)
    return {
        "protocol_v2": report,
        "seed_curve_mae": seed,
        "missed": evaluate_forecast.missed_targets(report, seed),
    }


def metadata(recipe: SeriesRecipe, version: str, seconds: float, losses: list[float]) -> dict[str, Any]:
    return {
        "name": NAME,
        "version": version,
        "task": "forecasting",
        "description": (
            "Forecaster for real series: seasonal drift (naive without a season), seasonal naive, drift, "
            "SES, damped Holt, theta and a harmonic fit, computed in the graph and weighed by a backtest "
            "on the history's own end; a GRU reads the series and sets the width of the bands. Gaussian "
            "mean and std for each of the next max_horizon steps"
        ),
        "config": {
            "network": "BacktestGRU",
            "context_length": CONTEXT_LENGTH,
            "patch_size": recipe.patch_size,
            "max_horizon": recipe.max_horizon,
            "min_length": MIN_LENGTH,
            "max_length": MAX_LENGTH,
            "max_season": series_net.classical.MAX_PERIOD,
            "window": recipe.window,
            "hidden_size": recipe.hidden_size,
            "intervals": "Gaussian: mean ± z(level)·std",
            "graph": series_net.parameters_described(),
        },
        "preprocessing": {
            "input": "raw series values; the service keeps the newest context_length values and left-pads "
            "them to a multiple of patch_size with service.series.pad_left; a missing value is masked",
            "inside_graph": "values relative to the first observed one and divided by their mean absolute "
            "difference; missing values carried forward; the season hint used, or detected",
        },
        "training": {
            "recipe": asdict(recipe),
            "generator": series_data.describe(recipe.sine_share),
            "loss": "sine family rows: Gaussian NLL of the std in units of the history's mean |Δy|; other "
            f"rows: {ANCHOR} · (log spread factor)²",
            "seconds": round(seconds, 1),
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
        },
        "inputs": [s.as_json() for s in INPUTS],
        "outputs": [s.as_json() for s in outputs(recipe.max_horizon)],
    }


def learned_from(network: series_net.BacktestGRU, earlier: Path) -> dict[str, Any]:
    """Load an earlier export's learned weights (its TorchScript file) into `network`; its metadata's
    training section, which they came from. Everything else in the graph is fixed arithmetic, rebuilt
    from the code."""
    state = torch.jit.load(str(earlier / "model.pt"), map_location="cpu").state_dict()
    learned = dict(network.named_parameters())
    missing = set(learned) - set(state)
    if missing:
        raise SystemExit(f"{earlier} holds no weights for {sorted(missing)}: not this network")
    mismatched = [
        f"{name} {tuple(state[name].shape)} (this network: {tuple(value.shape)})"
        for name, value in learned.items()
        if state[name].shape != value.shape
    ]
    if mismatched:
        raise SystemExit(
            f"{earlier}'s weights have other shapes than this recipe's network: {', '.join(mismatched)}; "
            "export them with the recipe they were trained with (its metadata's training.recipe)"
        )
    network.load_state_dict({name: state[name] for name in learned}, strict=False)
    document = json.loads((earlier / "metadata.json").read_text())
    return document["training"] | {"weights_from": f"{document['name']}/{document['version']}"}


def train(
    recipe: SeriesRecipe,
    out: Path,
    version: str | None,
    argv: list[str],
    threads: int,
    weights_from: Path | None = None,
) -> Path:
    torch.set_num_threads(threads)
    seed_everything(recipe.seed)
    network = series_net.BacktestGRU(
        patch_size=recipe.patch_size,
        hidden_size=recipe.hidden_size,
        max_horizon=recipe.max_horizon,
        context_length=CONTEXT_LENGTH,
        window=recipe.window,
    )
    started = time.perf_counter()
    losses = [] if weights_from else fit(network, recipe)
    seconds = time.perf_counter() - started
    network = network.eval()
    version = version or next_version(out / NAME)
    out_dir = out / NAME / version
    cases = parity_cases(np.random.default_rng(recipe.seed + 1))
    document = metadata(recipe, version, seconds, losses)
    if weights_from:
        document["training"] = learned_from(network, weights_from)
    export_model(network, cases[0], INPUTS, outputs(recipe.max_horizon), out_dir)
    parity = check_parity(out_dir, network, cases)
    metrics: dict[str, Any] = {"parity_max_relative_difference": parity}
    if not recipe.dry_run:
        metrics["real_series"] = real_scores(out_dir / "model.onnx", recipe.patch_size)
        metrics["sine_family"] = sine_scores(out_dir / "model.onnx", recipe.patch_size)
    write_metadata(out_dir, document | {"metrics": metrics}, "training.series_train", argv)
    logger.info("exported %s after %.0f s of training; metrics %s", out_dir, seconds, metrics)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Train and export series_gru, the forecaster for real series."
    )
    parser.add_argument("--out", type=Path, default=Path("models"), help="model repository root")
    parser.add_argument("--version", help="version folder to write (default: one past the newest)")
    parser.add_argument("--steps", type=int, help=f"training steps (default {SeriesRecipe.steps})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="a few tiny steps, no evaluation: seconds")
    parser.add_argument(
        "--weights-from",
        type=Path,
        help="an earlier version's folder: export its learned weights in this graph instead of training",
    )
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    recipe = SeriesRecipe(seed=args.seed)
    if args.steps is not None:
        recipe = replace(recipe, steps=args.steps)
    if args.dry_run:
        recipe = recipe.dry()
    train(recipe, args.out, args.version, argv, args.threads, args.weights_from)


if __name__ == "__main__":
    main()
