"""The real-series protocol's report (`training.evaluate_real`) as Markdown tables, and how far a frequency
group's coverage can be read.

A group's coverage is a share of few values: bands that miss exactly 5 % of values, each independently,
cover a share of n values that scatters binomially around 0.95. `calibrated_chance` is the probability
that such bands land within a goal's range: for 0.85–0.99 and a group of 8 to 14 values, 0.28 to 0.48,
so such a group outside the range says little. Misses within one series are not independent
(one wrong turn misses several steps), which makes the scatter wider still.
"""

from __future__ import annotations

import math
from typing import Any


def calibrated_chance(values: int, level: float, low: float, high: float) -> float:
    """The probability that exactly calibrated `level` % bands, each value missed independently, cover a
    share of `values` values within [low, high]."""
    from scipy.stats import binom  # the eval extra's

    miss = 1 - level / 100
    fewest, most = math.ceil(round((1 - high) * values, 9)), math.floor(round((1 - low) * values, 9))
    if values <= 0 or fewest > most:
        return 0.0
    return float(binom.cdf(most, values, miss) - binom.cdf(fewest - 1, values, miss))


def markdown(report: dict[str, Any]) -> str:
    """The report's summary as two Markdown tables: over all series, one row per forecaster (the coverage
    of the report's other levels in the last columns); then per frequency group, one column per
    forecaster, each group with its series, its held-out values and the chance that calibrated bands
    cover a share of them within the group goal."""
    protocol = report["protocol"]
    level, worse = f"{protocol['level']:g}", protocol["worse"]
    others = [f"{other:g}" for other in protocol.get("levels", []) if f"{other:g}" != level]
    low, high = protocol["group_coverage_goal"]
    who = report["forecasters"]
    overall = [
        f"| forecaster ({report['summary'][who[0]]['all']['series']} series) | geo-mean rel. MASE | "
        f"mean MASE | {level} % coverage | share > {worse}× naive |"
        + "".join(f" {other} % coverage |" for other in others),
        "| --- | --- | --- | --- | --- |" + " --- |" * len(others),
    ]
    for name in who:
        s = report["summary"][name]["all"]
        overall.append(
            f"| {name} | {s['geomean_relative_mase']:.3f} | {s['mean_mase']:.3f} | "
            f"{s[f'coverage_{level}']:.2f} | {s['share_worse_than_1.5x_naive']:.2f} |"
            + "".join(f" {s[f'coverage_{other}']:.2f} |" for other in others)
        )
    everything = report["summary"][who[0]]["all"]
    goal = "–".join(f"{share:.2f}" for share in protocol["coverage_goal"])
    overall.append(
        f"\n{everything['values']} held-out values: exactly calibrated {level} % bands (each value missed "
        f"independently) would cover {goal} of them with chance {everything['calibrated_in_goal']:.2f}."
    )
    groups = [
        "| group (series; values, chance) | " + " | ".join(who) + " |",
        "| --- | " + " | ".join("---" for _ in who) + " |",
    ]
    for group, first in report["summary"][who[0]].items():
        if group != "all":
            cells = [
                f"{report['summary'][name][group]['geomean_relative_mase']:.2f} / "
                f"{report['summary'][name][group][f'coverage_{level}']:.2f}"
                for name in who
            ]
            label = f"{group} ({first['series']}; {first['values']}, {first['calibrated_in_goal']:.2f})"
            groups.append(f"| {label} | " + " | ".join(cells) + " |")
    title = (
        f"Per frequency group: geo-mean relative MASE / {level} % coverage. Beside each group, its series, "
        f"its held-out values, and the chance that exactly calibrated {level} % bands (each value missed "
        f"independently) cover {low:g}–{high:g} of those values"
    )
    return "\n".join(overall) + "\n\n" + title + "\n\n" + "\n".join(groups) + "\n"


def per_series_markdown(report: dict[str, Any]) -> str:
    """Relative MASE and coverage of each forecaster on each series, as a Markdown table."""
    level = f"{report['protocol']['level']:g}"
    who = report["forecasters"]
    lines = [
        "| series | group | m | h | history | " + " | ".join(who) + " |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in who) + " |",
    ]
    for name, s in report["series"].items():
        cells = [
            f"{s['forecasters'][w]['relative_mase']:.2f} / {s['forecasters'][w][f'coverage_{level}']:.2f}"
            for w in who
        ]
        lines.append(
            f"| {name} | {s['group']} | {s['season']} | {s['horizon']} | {s['history']} | "
            + " | ".join(cells)
            + " |"
        )
    for name, reason in report["skipped"].items():
        lines.append(f"| {name} | skipped: {reason} |")
    return "\n".join(lines) + "\n"
