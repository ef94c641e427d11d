"""The reliability diagram of the digit models before and after temperature scaling."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from training.calibrate import Reliability

STYLES = {"before": ("tab:orange", "o"), "after": ("tab:blue", "s")}


def reliability_diagram(path: Path, panels: Mapping[str, tuple[Reliability, Reliability]]) -> None:
    """One column per model: above, each filled bin's accuracy against its mean confidence, before and
    after (the diagonal is perfect calibration; a larger marker, more predictions); below, how many
    predictions fall in each bin, on a log scale."""
    fig, axes = plt.subplots(
        2, len(panels), figsize=(4.2 * len(panels), 6.2), squeeze=False, height_ratios=[3, 1.2]
    )
    for column, (name, pair) in enumerate(panels.items()):
        top, bottom = axes[0, column], axes[1, column]
        top.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
        edges = np.linspace(0.0, 1.0, len(pair[0].counts) + 1)
        width = edges[1] - edges[0]
        for offset, when, measured in zip((-0.25, 0.25), STYLES, pair, strict=True):
            colour, marker = STYLES[when]
            filled = measured.counts > 0
            top.plot(measured.confidence[filled], measured.accuracy[filled], color=colour, lw=1, alpha=0.6)
            top.scatter(
                measured.confidence[filled],
                measured.accuracy[filled],
                s=8 + 14 * np.log10(measured.counts[filled]),
                color=colour,
                marker=marker,
                label=f"{when}: ECE {measured.ece:.3f}",
                zorder=3,
            )
            bottom.bar(
                edges[:-1] + width * (0.5 + offset), measured.counts, width=width / 2, color=colour, log=True
            )
        top.set_xlim(0, 1)
        top.set_ylim(0, 1.02)
        top.set_title(name)
        top.set_ylabel("accuracy in the bin")
        top.grid(alpha=0.3)
        top.legend(fontsize=8, loc="upper left")
        bottom.set_xlim(0, 1)
        bottom.set_xlabel(f"confidence (top-1 probability), {len(edges) - 1} bins")
        bottom.set_ylabel("predictions")
        bottom.grid(alpha=0.3)
    images = int(next(iter(panels.values()))[0].counts.sum())
    fig.suptitle(f"Reliability on {images:,} MNIST test images, before and after temperature scaling")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
