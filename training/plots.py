"""The pictures each training run leaves in its report folder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def curves(path: Path, history: Mapping[str, Sequence[float]], title: str) -> None:
    """One panel per named series (e.g. train loss, test accuracy) against the epoch."""
    fig, axes = plt.subplots(1, len(history), figsize=(5 * len(history), 3.5), squeeze=False)
    for ax, (name, values) in zip(axes[0], history.items(), strict=True):
        ax.plot(range(1, len(values) + 1), values, marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)


def confusion_matrix(path: Path, labels: np.ndarray, predictions: np.ndarray, title: str) -> None:
    matrix = np.zeros((10, 10), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    shown = ax.imshow(np.log1p(matrix), cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(
                col,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if row == col else "black",
            )
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(shown, ax=ax, label="log(1 + count)")
    _save(fig, path)


def forecasts(
    path: Path,
    examples: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    level: float,
) -> None:
    """Each example: (title, history, truth, forecast, lower, upper) with the `level` % band."""
    columns = 2
    rows = -(-len(examples) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(12, 3.2 * rows), squeeze=False)
    for ax, (title, history, truth, forecast, lower, upper) in zip(axes.flat, examples, strict=False):
        past = np.arange(-len(history) + 1, 1)
        future = np.arange(1, len(truth) + 1)
        ax.plot(past, history, color="black", lw=1, label="history")
        ax.plot(future, truth, color="tab:green", lw=1.2, label="truth")
        ax.plot(future, forecast, color="tab:red", lw=1.2, label="forecast")
        ax.fill_between(future, lower, upper, color="tab:red", alpha=0.2, label=f"{level:g} % interval")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(examples) :]:
        ax.axis("off")
    axes[0][0].legend(fontsize=8, loc="upper left")
    _save(fig, path)


def forecast_comparison(
    path: Path,
    panels: Sequence[
        tuple[str, np.ndarray, np.ndarray, Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]]]
    ],
    level: float,
) -> None:
    """One panel per example: (title, history, truth, [(label, forecast, lower, upper), ...]), each
    forecast with its `level` % band."""
    colours = ["tab:red", "tab:blue", "tab:purple", "tab:orange"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6), squeeze=False)
    for ax, (title, history, truth, forecasts) in zip(axes[0], panels, strict=True):
        past = np.arange(-len(history) + 1, 1)
        future = np.arange(1, len(truth) + 1)
        ax.plot(past, history, color="black", lw=1, label="history")
        for colour, (label, forecast, lower, upper) in zip(colours, forecasts, strict=False):
            ax.plot(future, forecast, color=colour, lw=1.4, label=label)
            ax.fill_between(future, lower, upper, color=colour, alpha=0.18)
        ax.plot(future, truth, color="black", lw=1.2, ls="--", label="truth")
        # Frame the series itself; a forecast far off it leaves the frame (its MAE is in the legend).
        low, high = min(history.min(), truth.min()), max(history.max(), truth.max())
        ax.set_ylim(low - 0.5 * (high - low), high + 0.5 * (high - low))
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"forecasts with their {level:g} % bands", fontsize=10)
    _save(fig, path)


def real_forecasts(path: Path, panels: Sequence[Mapping[str, Any]], title: str, tail: int = 96) -> None:
    """One panel per real series: the last `tail` values of its history, the held-out values, and each
    forecaster's mean with its 95 % band. A panel holds "name", "history", "truth" and "forecasts", a
    mapping from forecaster to (mean, lower, upper)."""
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.4 * rows), squeeze=False)
    colours = ["tab:blue", "tab:orange", "tab:green"]
    for ax, panel in zip(axes.ravel(), panels, strict=False):
        history, truth = np.asarray(panel["history"])[-tail:], np.asarray(panel["truth"])
        past = np.arange(-len(history), 0)
        ahead = np.arange(len(truth))
        ax.plot(past, history, color="black", linewidth=1.0, label="history")
        ax.plot(ahead, truth, color="black", linestyle="--", linewidth=1.0, label="held out")
        for colour, (who, (mean, lower, upper)) in zip(colours, panel["forecasts"].items(), strict=False):
            ax.plot(ahead, mean, color=colour, linewidth=1.4, label=who)
            ax.fill_between(ahead, lower, upper, color=colour, alpha=0.18)
        ax.set_title(panel["name"], fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title)
    _save(fig, path)
