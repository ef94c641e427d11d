"""The forecaster's training recipes, and how a model trained by one describes itself in metadata.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from training.data import V1_FAMILY, V2_FAMILY, SeriesFamily

MIN_LENGTH = 16
MAX_LENGTH = 4096


@dataclass(frozen=True)
class Recipe:
    """What each recipe trains, on which series, and for how long (options override the numbers)."""

    network: str
    family: SeriesFamily
    context_length: int
    hidden_size: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    lr: float
    lengths: str  # how the shorter half of each batch is cut: "uniform" or "log-uniform" in [16, context]
    calibrate_std: bool


RECIPES = {
    "v1": Recipe("SeriesGRU", V1_FAMILY, 256, 128, 30, 200, 256, 1e-3, "uniform", False),
    "v2": Recipe("HarmonicGRU", V2_FAMILY, 1024, 64, 8, 100, 128, 2e-3, "uniform", True),
}


def describe(
    recipe: Recipe, args: Any, version: str, epochs: int, steps: int, device: str, seconds: float,
    calibration: list[float] | None,
) -> dict[str, Any]:  # fmt: skip
    """metadata.json's description of the network, its preprocessing and its training."""
    harmonic = recipe.network == "HarmonicGRU"
    return {
        "name": "sine_gru",
        "version": version,
        "task": "forecasting",
        "description": (
            "GRU forecaster: line and one sinusoid (the periodogram's peak) fitted in-graph, a bias-free "
            f"{args.num_layers}-layer GRU reads what they leave in patches and gates the sinusoid's "
            "continuation, corrects it and sets the spread; Gaussian mean and std for each of the next "
            "max_horizon steps"
            if harmonic
            else "GRU forecaster: linear trend removed in-graph, residual read in patches by a "
            "bias-free 2-layer GRU, Gaussian mean and std for each of the next max_horizon steps"
        ),
        "config": {
            "network": recipe.network,
            "context_length": recipe.context_length,
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
            "inside_graph": (
                "masked least-squares line removed, residual scaled by its std; the periodogram's peak "
                "frequency (periods 2.5 to half the window) and a sinusoid at it fitted jointly with the "
                "line (training.harmonics); std scaled by a per-step calibration factor"
                if harmonic
                else "masked least-squares line removed and re-added; residual scaled by its std"
            ),
        },
        "training": {
            "recipe": args.recipe,
            "dataset": "synthetic: y_t = A·sin(2πt/P + φ) + (k·A/P)·t + c + ε (training.data.sine_series), "
            + recipe.family.describe(),
            "family": asdict(recipe.family),
            "history_lengths": f"half full context, half {recipe.lengths} in [{MIN_LENGTH}, context]",
            "epochs": epochs,
            "steps_per_epoch": steps,
            "batch_size": args.batch_size,
            "optimizer": "AdamW, weight decay 1e-4",
            "schedule": f"one-cycle, max lr {args.lr}",
            "loss": "amplitude-scaled MSE (mean) + Gaussian NLL (std, mean detached)",
            "std_calibration": calibration,
            "seed": args.seed,
            "device": device,
            "threads": args.threads,
            "dry_run": args.dry_run,
            "seconds": round(seconds, 1),
        },
    }
