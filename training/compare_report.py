"""The report of `python -m training.compare`: compare.md (the tables of `training.compare_tables`, the
claims' verdicts of `training.compare_claims`) and the plots of `training.compare_plots`, built from the
JSON each section leaves in the report folder."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from training.common import write_json
from training.compare_claims import verdicts
from training.compare_plots import plot_digits, plot_forecast, plot_memory
from training.compare_runs import VARIANTS
from training.compare_tables import budget_lines, digit_table, forecast_table, memory_table

logger = logging.getLogger(__name__)

SECTIONS = ("digits", "forecast", "speed", "memory", "memory_long")


def load_sections(report_dir: Path) -> dict[str, Any]:
    """Each section's JSON that `report_dir` holds (the finished one, else the partial one), with the
    digit variants in the order training.compare_runs.VARIANTS lists them."""
    found = {}
    for section in SECTIONS:
        for candidate in (f"{section}.json", f"{section}.partial.json"):
            if (report_dir / candidate).exists():
                found[section] = json.loads((report_dir / candidate).read_text())
                break
    if "digits" in found:
        variants = found["digits"]["variants"]
        found["digits"]["variants"] = {name: variants[name] for name in VARIANTS if name in variants}
    return found


def write_report(report_dir: Path, docs_dir: Path | None) -> None:
    """compare.md (tables, claims) and compare_*.png from the sections' JSON; plots copied to docs_dir."""
    import matplotlib

    matplotlib.use("Agg")
    found = load_sections(report_dir)
    speed = found.get("speed", {})
    lines = ["# RNN vs LSTM vs GRU, measured", ""]
    some: dict[str, Any] = next(iter(found.values()), {})
    hw = some.get("hardware", {})
    timed = {s: r["wall_seconds"] / 60 for s, r in found.items() if "wall_seconds" in r}
    walls = ", ".join(f"{s} {minutes:.1f}" for s, minutes in timed.items())
    lines.append(
        f"Hardware: {hw.get('cpu', '?')}, {hw.get('cores', '?')} cores shared with other work, torch "
        f"{hw.get('torch', '?')} on {hw.get('torch_threads', '?')} threads, no GPU. Wall time per "
        f"section: {walls} min ({sum(timed.values()):.0f} min in all)."
    )
    lines += ["", *budget_lines(found)]
    plots = []
    if "digits" in found:
        lines += ["", "## Row-wise MNIST", "", *digit_table(found["digits"], speed)]
        plot_digits(report_dir / "compare_digits.png", found["digits"], speed)
        plots.append("compare_digits.png")
    if "forecast" in found:
        title = "## Forecasting (protocol v1: 256 held-out series, history 256, h = 32)"
        lines += ["", title, "", *forecast_table(found["forecast"], speed)]
        plot_forecast(report_dir / "compare_forecast.png", found["forecast"])
        plots.append("compare_forecast.png")
    if "memory" in found:
        note = (
            "Accuracy on 512 fresh sequences, best of the learning rates; chance 0.125. skipped: the "
            "cell was at chance at a shorter L; not run: the run was stopped (time)."
        )
        lines += [
            "",
            f"## Memory probe: {found['memory']['task']}",
            "",
            *memory_table(found["memory"]),
            "",
            note,
        ]
        if "memory_long" in found:
            title = f"With {found['memory_long']['budget']['steps']} steps per cell, L and lr"
            lines += ["", title, "", *memory_table(found["memory_long"])]
        plot_memory(report_dir / "compare_memory.png", found["memory"], found.get("memory_long"))
        plots.append("compare_memory.png")
    lines += ["", "## The claims", "", *verdicts(found), ""]
    (report_dir / "compare.md").write_text("\n".join(lines))
    write_json(report_dir / "results.json", found)
    if docs_dir is not None:
        docs_dir.mkdir(parents=True, exist_ok=True)
        for name in plots:
            shutil.copyfile(report_dir / name, docs_dir / name)
    logger.info("report: %s", report_dir / "compare.md")
