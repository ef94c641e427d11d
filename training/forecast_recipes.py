"""The forecaster's training recipes, and how a model trained by one describes itself in metadata.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from training.data import V1_FAMILY, V2_FAMILY, SeriesFamily
from training.evaluate_forecast import EVAL_SERIES, V2_SERIES
from training.recipes import recipe_json

MIN_LENGTH = 16
MAX_LENGTH = 4096


@dataclass(frozen=True)
class ForecastRecipe:
    """What a recipe trains, on which series, for how long, and how the result is checked.

    AdamW with a one-cycle schedule that rises to `lr` over the first `warmup` share of the steps; the
    loss is the amplitude-scaled squared error for the mean plus the Gaussian NLL for the std (mean
    detached); gradients clipped to norm `gradient_clip`. Every batch is drawn afresh from `family`.
    """

    name: str
    network: str  # "SeriesGRU" or "HarmonicGRU"
    family: SeriesFamily
    context_length: int
    hidden_size: int
    epochs: int
    steps_per_epoch: int
    batch_size: int
    lr: float
    lengths: str  # how the shorter half of each batch is cut: "uniform" or "log-uniform" in [16, context]
    calibrate_std: bool
    patch_size: int = 8
    num_layers: int = 2
    max_horizon: int = 128
    weight_decay: float = 1e-4
    warmup: float = 0.1
    gradient_clip: float = 1.0
    validation_series: int = 512
    """One fixed draw, scored after every epoch."""
    calibration_series: int = 4096
    """Another fixed draw, for the std calibration (when `calibrate_std`)."""
    eval_series: int = EVAL_SERIES
    """Series of evaluation protocol v1."""
    protocol_v2_series: int = V2_SERIES
    """Series per set of evaluation protocol v2."""
    seed: int = 0
    dry_run: bool = False

    def dry(self) -> ForecastRecipe:
        """The same recipe for a few small steps, scored on a few series: seconds, not minutes."""
        return replace(
            self,
            epochs=1,
            steps_per_epoch=5,
            batch_size=min(self.batch_size, 32),
            validation_series=64,
            calibration_series=128,
            eval_series=32,
            protocol_v2_series=16,
            dry_run=True,
        )


RECIPES = {
    "v1": ForecastRecipe(
        name="v1",
        network="SeriesGRU",
        family=V1_FAMILY,
        context_length=256,
        hidden_size=128,
        epochs=30,
        steps_per_epoch=200,
        batch_size=256,
        lr=1e-3,
        lengths="uniform",
        calibrate_std=False,
    ),
    "v2": ForecastRecipe(
        name="v2",
        network="HarmonicGRU",
        family=V2_FAMILY,
        context_length=1024,
        hidden_size=64,
        epochs=8,
        steps_per_epoch=100,
        batch_size=128,
        lr=2e-3,
        lengths="uniform",
        calibrate_std=True,
    ),
}


def describe(
    recipe: ForecastRecipe, version: str, device: str, threads: int, seconds: float,
    calibration: list[float] | None,
) -> dict[str, Any]:  # fmt: skip
    """metadata.json's description of the network, its preprocessing, the recipe whole and the run."""
    harmonic = recipe.network == "HarmonicGRU"
    return {
        "name": "sine_gru",
        "version": version,
        "task": "forecasting",
        "description": (
            "GRU forecaster: line and one sinusoid (the periodogram's peak) fitted in-graph, a bias-free "
            f"{recipe.num_layers}-layer GRU reads what they leave in patches and gates the sinusoid's "
            "continuation, corrects it and sets the spread; Gaussian mean and std for each of the next "
            "max_horizon steps"
            if harmonic
            else "GRU forecaster: linear trend removed in-graph, residual read in patches by a "
            f"bias-free {recipe.num_layers}-layer GRU, Gaussian mean and std for each of the next "
            "max_horizon steps"
        ),
        "config": {
            "network": recipe.network,
            "context_length": recipe.context_length,
            "patch_size": recipe.patch_size,
            "max_horizon": recipe.max_horizon,
            "min_length": MIN_LENGTH,
            "max_length": MAX_LENGTH,
            "hidden_size": recipe.hidden_size,
            "num_layers": recipe.num_layers,
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
        "recipe": recipe_json(recipe),
        "training": {
            "recipe": recipe.name,
            "dataset": "synthetic: y_t = A·sin(2πt/P + φ) + (k·A/P)·t + c + ε (training.data.sine_series), "
            + recipe.family.describe(),
            "family": asdict(recipe.family),
            "history_lengths": f"half full context, half {recipe.lengths} in [{MIN_LENGTH}, context]",
            "std_calibration": calibration,
            "seed": recipe.seed,
            "device": device,
            "threads": threads,
            "dry_run": recipe.dry_run,
            "seconds": round(seconds, 1),
        },
    }
