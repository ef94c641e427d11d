"""The reliability diagram of the digit models before and after calibration.

python -m training.calibration_plot --data-dir ../shared/data --model-dir models --out docs/calibration.png

draws, for each digit model in the repository, its newest version beside the uncalibrated version it was
made from (`calibrated_from` in metadata.json), both measured with ONNX Runtime on the 10,000 MNIST test
images. `python -m training.calibrate --plot` draws the models a calibration run made instead.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

if TYPE_CHECKING:
    from training.calibrate import Reliability

logger = logging.getLogger(__name__)

STYLES = (("tab:orange", "o"), ("tab:blue", "s"))
Panel = Sequence[tuple[str, "Reliability"]]


def reliability_diagram(path: Path, panels: Mapping[str, Panel]) -> None:
    """One column per model, each with two (version, reliability) pairs, before and after: above, each
    filled bin's accuracy against its mean confidence (the diagonal is perfect calibration; a larger
    marker, more predictions); below, how many predictions fall in each bin, on a log scale."""
    fig, axes = plt.subplots(
        2, len(panels), figsize=(4.2 * len(panels), 6.2), squeeze=False, height_ratios=[3, 1.2]
    )
    for column, (name, pair) in enumerate(panels.items()):
        top, bottom = axes[0, column], axes[1, column]
        top.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect calibration")
        edges = np.linspace(0.0, 1.0, len(pair[0][1].counts) + 1)
        width = edges[1] - edges[0]
        for offset, (colour, marker), (version, measured) in zip((-0.25, 0.25), STYLES, pair, strict=True):
            filled = measured.counts > 0
            top.plot(measured.confidence[filled], measured.accuracy[filled], color=colour, lw=1, alpha=0.6)
            top.scatter(
                measured.confidence[filled],
                measured.accuracy[filled],
                s=8 + 14 * np.log10(measured.counts[filled]),
                color=colour,
                marker=marker,
                label=f"v{version}: ECE {measured.ece:.3f}",
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
    images = int(next(iter(panels.values()))[0][1].counts.sum())
    fig.suptitle(f"Reliability on {images:,} MNIST test images, before and after calibration")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def committed_panels(model_dir: Path, data_dir: Path) -> dict[str, Panel]:
    """Each calibrated digit model's newest version and the version it was made from, on the test set."""
    from service.repository import newest_version, read_metadata
    from training.calibrate import DIGIT_MODELS, onnx_scores, reliability
    from training.data import load_test_set

    test = load_test_set(data_dir)
    images, labels = test.images, test.labels
    panels: dict[str, Panel] = {}
    for name in DIGIT_MODELS:
        newest = newest_version(model_dir, name)
        calibrated_from = read_metadata(newest).get("calibrated_from")
        if calibrated_from is None:
            logger.warning("%s: version %s is not calibrated; left out of the diagram", name, newest.name)
            continue
        panel = []
        for version in (calibrated_from["version"], newest.name):
            path = model_dir / name / version / "model.onnx"
            probabilities = onnx_scores(path, images, f"{name} v{version}")[1]
            panel.append((version, reliability(probabilities, labels)))
        panels[name] = panel
    if not panels:
        raise SystemExit(
            f"{model_dir}: no digit model's newest version is calibrated: run training.calibrate"
        )
    return panels


def main(argv: list[str] | None = None) -> None:
    from training.common import repository_arguments, setup_logging

    setup_logging()
    parser = argparse.ArgumentParser(description="Draw the committed digit models' reliability diagram.")
    repository_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("docs/calibration.png"), help="the PNG to write")
    args = parser.parse_args(argv)
    reliability_diagram(args.out, committed_panels(args.model_dir, args.data_dir))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
