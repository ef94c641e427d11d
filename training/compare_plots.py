"""The plots of `python -m training.compare`'s report, from the sections' JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.cells import CELL_TYPES


def plot_digits(path: Path, digits: dict[str, Any], speed: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(digits["variants"])
    v = digits["variants"]
    estimate = speed.get("training_epoch_seconds_estimate", {})
    onnx = speed.get("onnx_items_per_second", {})
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    axes[0].bar(names, [v[n]["parameters"] / 1e3 for n in names])
    axes[0].set_title("parameters (thousands)")
    axes[1].bar(names, [estimate.get(n, np.mean(v[n]["seconds_per_epoch"])) for n in names])
    axes[1].set_title("training s per MNIST epoch (2 threads)")
    x = np.arange(len(names))
    for offset, batch in ((-0.2, "1"), (0.2, "64")):
        axes[2].bar(
            x + offset, [onnx.get(f"digit_{n}", {}).get(batch, 0) for n in names], 0.4, label=f"batch {batch}"
        )
    axes[2].set_xticks(x, names)
    axes[2].set_yscale("log")
    axes[2].legend()
    axes[2].set_title("ONNX Runtime images/s (2 threads)")
    for offset, key in ((-0.2, "train_accuracy"), (0.2, "test_accuracy")):
        label = {"train_accuracy": "train (clean images)", "test_accuracy": "test"}[key]
        axes[3].bar(x + offset, [100 * v[n][key] for n in names], 0.4, label=label)
    axes[3].set_xticks(x, names)
    axes[3].set_ylim(min(100 * v[n]["test_accuracy"] for n in names) - 1.5, 100)
    axes[3].legend(loc="lower right")
    axes[3].set_title("accuracy (%)")
    budget = digits["budget"]
    fig.suptitle(
        f"Row-wise MNIST, hidden {budget['digit_hidden_size']}, "
        f"{budget['digit_epochs']} epochs each, same seed"
    )
    save_figure(fig, path)


def plot_memory(path: Path, memory: dict[str, Any], longer: dict[str, Any] | None) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for cell in CELL_TYPES:
        points = sorted(
            (r["length"], r["accuracy"])
            for r in memory["results"]
            if r["cell"] == cell and not r.get("skipped")
        )
        ax.plot(*zip(*points, strict=True), marker="o", label=cell)
    if longer:
        for index, cell in enumerate(CELL_TYPES):
            runs = [r for r in longer["results"] if r["cell"] == cell and not r.get("skipped")]
            if runs:
                ax.scatter(
                    [r["length"] for r in runs],
                    [r["accuracy"] for r in runs],
                    marker="*",
                    s=140,
                    color=f"C{index}",
                    zorder=3,
                    label=f"{cell}, {longer['budget']['steps']} steps",
                )
    ax.axhline(memory["chance"], color="grey", linestyle="--", label="chance")
    ax.axhline(memory["remembers_at_accuracy"], color="grey", linestyle=":", label="remembers (0.9)")
    ax.set_xscale("log")
    ax.set_xlabel("sequence length L")
    ax.set_ylabel("accuracy")
    ax.set_title(f"copy-first: name the first symbol ({memory['budget']['steps']} steps per cell, L and lr)")
    ax.legend()
    save_figure(fig, path)


def plot_forecast(path: Path, forecast: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    cells = forecast["cells"]
    protocol = next(iter(cells.values()))["protocol_v1"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in zip(axes, ("mae", "mase"), strict=True):
        ax.bar(list(cells), [r["protocol_v1"]["model"][key] for r in cells.values()])
        ax.axhline(protocol["seasonal_naive"][key], color="grey", linestyle="--", label="seasonal naive")
        ax.set_title(f"forecast protocol v1: {key.upper()} (h = 32)")
        ax.legend()
    save_figure(fig, path)


def save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
