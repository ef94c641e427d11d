"""The claims that `python -m training.compare` tests (parameters, speed, memory, overfitting) and
each one's verdict against the measurements: holds or not, and by how much."""

from __future__ import annotations

from typing import Any

import numpy as np

from training.cells import CELL_TYPES
from training.compare_tables import ratio
from training.memory_probe import longest_remembered


def parameter_verdicts(variants: dict[str, Any]) -> list[str]:
    lines = []
    for cell, claimed in (("lstm", 4), ("gru", 3)):
        total = variants[cell]["parameters"] / variants["rnn"]["parameters"]
        recurrent = variants[cell]["recurrent_parameters"] / variants["rnn"]["recurrent_parameters"]
        verdict = "holds" if abs(total / claimed - 1) < 0.1 else "does not hold"
        lines.append(
            f"- **{cell.upper()} has about {claimed}× a plain RNN's weights: {verdict}.** Its recurrent "
            f"layers have exactly {recurrent:.2f}× (gates × (H·(I+H) + 2H) per layer); the whole digit "
            f"network {total:.2f}×, since the linear head is the same size."
        )
    return lines


def ordering(seconds: dict[str, float]) -> str:
    """`rnn 21 s (1.00×), lstm ...`, fastest first, as multiples of the RNN's."""
    ranked = sorted(("rnn", "lstm", "gru"), key=seconds.__getitem__)
    return ", ".join(f"{n} {seconds[n]:.1f} s ({ratio(seconds[n], seconds['rnn'])})" for n in ranked)


def speed_verdicts(speed: dict[str, Any], digits: dict[str, Any] | None) -> list[str]:
    """RNN fastest and LSTM slowest, judged on every timing there is: the interleaved training steps
    (digits and forecaster) and the epochs of the digit run itself."""
    timings = {"digit epoch, interleaved steps": speed["training_epoch_seconds_estimate"]}
    if digits:
        run = {n: float(np.mean(r["seconds_per_epoch"])) for n, r in digits["variants"].items()}
        if {"rnn", "lstm", "gru"} <= run.keys():
            timings["digit epoch, as trained"] = run
    if speed.get("forecast_epoch_seconds_estimate"):
        timings["forecaster epoch, interleaved steps"] = speed["forecast_epoch_seconds_estimate"]
    ranked = [sorted(("rnn", "lstm", "gru"), key=seconds.__getitem__) for seconds in timings.values()]
    fastest = [order[0] == "rnn" for order in ranked]
    slowest = [order[-1] == "lstm" for order in ranked]

    def judged(results: list[bool]) -> str:
        return "holds" if all(results) else "does not hold" if not any(results) else "mixed"

    listed = "; ".join(f"{name}: {ordering(seconds)}" for name, seconds in timings.items())
    estimate = speed["training_epoch_seconds_estimate"]
    bidirectional = (
        f"bilstm {ratio(estimate['bilstm'], estimate['lstm'])} the LSTM, "
        f"bigru {ratio(estimate['bigru'], estimate['gru'])} the GRU"
    )
    return [
        f"- **RNN trains fastest: {judged(fastest)} ({sum(fastest)} of {len(fastest)} timings); LSTM "
        f"slowest: {judged(slowest)} ({sum(slowest)} of {len(slowest)}).** {listed}. Bidirectional "
        f"(interleaved): {bidirectional}."
    ]


def accuracies(probe: dict[str, Any], cell: str) -> str:
    runs = [r for r in probe["results"] if r["cell"] == cell and not r.get("skipped")]
    return ", ".join(f"{r['length']}: {r['accuracy']:.2f}" for r in runs) or "not run"


def memory_verdicts(memory: dict[str, Any], longer: dict[str, Any] | None) -> list[str]:
    """The three "how far back" claims; a cell remembers over L when it learned L to accuracy ≥ 0.9
    with either budget."""
    probes = [memory] + ([longer] if longer else [])
    longest: dict[str, int] = {}
    for cell in CELL_TYPES:
        reached = [n for n in (longest_remembered(p, cell) for p in probes) if n is not None]
        longest[cell] = max(reached, default=0)
    if not any(longest.values()):
        return [
            "- **How far back: inconclusive.** No cell learned any tested L to accuracy 0.9 within the "
            "budget, so the budget, not memory, is what the probe measured."
        ]
    claims = {
        "rnn": ("under 10 steps", longest["rnn"] < 10),
        "gru": ("about 100", 30 < longest["gru"] < 1000),
        "lstm": ("over 1,000", longest["lstm"] >= 1000),
    }
    lines = []
    for name, (claim, holds) in claims.items():
        furthest = f"L = {longest[name]}" if longest[name] else "none"
        detail = f"accuracy by L: {accuracies(memory, name)}"
        if longer:
            detail += f"; with {longer['budget']['steps']} steps: {accuracies(longer, name)}"
        lines.append(
            f"- **{name.upper()} remembers {claim}: {'holds' if holds else 'does not hold'} at this "
            f"budget.** Longest L learned to accuracy ≥ 0.9: {furthest} ({detail})."
        )
    return lines


def digit_verdicts(variants: dict[str, Any]) -> list[str]:
    gaps = {n: 100 * r["train_test_gap"] for n, r in variants.items()}
    holds = gaps["lstm"] > gaps["rnn"] and gaps["gru"] > gaps["rnn"]
    listed = ", ".join(f"{n} {g:+.2f} pt" for n, g in gaps.items())
    verdict = "holds" if holds else "does not hold"
    if max(abs(g) for g in gaps.values()) < 0.5:
        verdict = "not seen (every gap within ±0.5 pt)"
    lines = [
        f"- **More weights, more overfitting (LSTM and GRU gaps above the RNN's): {verdict} at this "
        f"budget.** Clean-train minus test accuracy: {listed}."
    ]
    for bi, uni in (("bilstm", "lstm"), ("bigru", "gru")):
        if bi in variants:
            gain = 100 * (variants[bi]["test_accuracy"] - variants[uni]["test_accuracy"])
            lines.append(
                f"- **{bi}: test accuracy {variants[bi]['test_accuracy']:.4f} against {uni}'s "
                f"{variants[uni]['test_accuracy']:.4f}** ({gain:+.2f} pt) "
                f"for {ratio(variants[bi]['parameters'], variants[uni]['parameters'])} the weights."
            )
    return lines


def verdicts(found: dict[str, Any]) -> list[str]:
    """Each claim of the tutorials against the measurements: holds or not, and by how much."""
    lines = []
    variants = found.get("digits", {}).get("variants", {})
    if {"rnn", "lstm", "gru"} <= variants.keys():
        lines += parameter_verdicts(variants)
    if "speed" in found:
        lines += speed_verdicts(found["speed"], found.get("digits"))
    if "memory" in found:
        lines += memory_verdicts(found["memory"], found.get("memory_long"))
    if {"rnn", "lstm", "gru"} <= variants.keys():
        lines += digit_verdicts(variants)
    return lines
