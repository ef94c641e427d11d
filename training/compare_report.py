"""The report of `python -m training.compare`: markdown tables, the claims' verdicts and the plots,
built from the JSON each section leaves in the report folder."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from training.cells import CELL_TYPES
from training.common import write_json
from training.compare_runs import VARIANTS
from training.memory_probe import longest_remembered

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


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}×"


def digit_table(digits: dict[str, Any], speed: dict[str, Any]) -> list[str]:
    variants = digits["variants"]
    base = variants.get("rnn")
    estimate = speed.get("training_epoch_seconds_estimate", {})
    onnx = speed.get("onnx_items_per_second", {})
    rows = [
        "| Variant | Parameters | × RNN (all / recurrent) | s per epoch (run / interleaved) | × RNN "
        "(interleaved) | ONNX images/s, batch 1 / 64 | Test accuracy | Train (clean) | Train − test |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in variants.items():
        per_epoch = float(np.mean(r["seconds_per_epoch"]))
        times = f"{per_epoch:.0f} / {estimate[name]:.0f}" if name in estimate else f"{per_epoch:.0f} / –"
        speedup = ratio(estimate[name], estimate["rnn"]) if name in estimate and "rnn" in estimate else "–"
        size = "–"
        if base:
            recurrent = ratio(r["recurrent_parameters"], base["recurrent_parameters"])
            size = f"{ratio(r['parameters'], base['parameters'])} / {recurrent}"
        served = onnx.get(f"digit_{name}")
        thru = f"{served['1']:,.0f} / {served['64']:,.0f}" if served else "–"
        accuracy = (
            f"{r['test_accuracy']:.4f} | {r['train_accuracy']:.4f} | {100 * r['train_test_gap']:+.2f} pt"
        )
        rows.append(f"| {name} | {r['parameters']:,} | {size} | {times} | {speedup} | {thru} | {accuracy} |")
    return rows


def forecast_table(forecast: dict[str, Any], speed: dict[str, Any]) -> list[str]:
    cells = forecast["cells"]
    onnx = speed.get("onnx_items_per_second", {})
    rows = [
        "| Cell | Parameters | × RNN | s per epoch (run / interleaved) | ONNX series/s, batch 1 / 64 | "
        "MAE | MASE | 95 % coverage | MAE, first training batch | Train − test MAE |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for cell, r in cells.items():
        served = onnx.get(f"forecast_{cell}")
        thru = f"{served['1']:,.0f} / {served['64']:,.0f}" if served else "–"
        size = f"{r['parameters']:,} | {ratio(r['parameters'], cells['rnn']['parameters'])}"
        scores = (
            f"{r['test_mae']:.3f} | {r['test_mase']:.3f} | {r['protocol_v1']['model']['coverage_95']:.3f}"
        )
        seen = f"{r['train_mae_first_batch']:.3f} | {r['train_test_gap']:+.3f}"
        estimate = speed.get("forecast_epoch_seconds_estimate", {}).get(cell)
        times = f"{np.mean(r['seconds_per_epoch']):.1f} / " + (f"{estimate:.1f}" if estimate else "–")
        rows.append(f"| {cell} | {size} | {times} | {thru} | {scores} | {seen} |")
    protocol = next(iter(cells.values()))["protocol_v1"]
    for baseline in ("seasonal_naive", "last_value"):
        scores = f"{protocol[baseline]['mae']:.3f} | {protocol[baseline]['mase']:.3f}"
        rows.append(f"| {baseline.replace('_', ' ')} (baseline) | – | – | – | – | {scores} | – | – | – |")
    return rows


def memory_table(memory: dict[str, Any]) -> list[str]:
    lengths = memory.get("lengths") or sorted({r["length"] for r in memory["results"]})
    rows = [
        "| Cell | " + " | ".join(f"L = {n}" for n in lengths) + " | Longest L at ≥ 0.9 |",
        "| --- |" + " ---: |" * (len(lengths) + 1),
    ]
    for cell in CELL_TYPES:
        runs = {r["length"]: r for r in memory["results"] if r["cell"] == cell}
        scores = {n: "skipped" if r.get("skipped") else f"{r['accuracy']:.2f}" for n, r in runs.items()}
        longest = longest_remembered(memory, cell)
        cells = " | ".join(scores.get(n, "not run") for n in lengths)
        rows.append(f"| {cell} | {cells} | {longest or 'none'} |")
    return rows


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


def budget_lines(found: dict[str, Any]) -> list[str]:
    """What every variant got, and which digit variants went into the model repository."""
    lines = []
    if "digits" in found:
        b = found["digits"]["budget"]
        published = ", ".join(found["digits"].get("published", [])) or "none"
        lines.append(
            f"Digits: {b['digit_epochs']} epochs over {b['digit_train_images']:,} images, batch "
            f"{b['digit_batch_size']}, hidden {b['digit_hidden_size']} (per direction), {b['digit_layers']} "
            f"layers, digit_lstm's recipe (AdamW one-cycle to {b['digit_lr']}, label smoothing 0.05, "
            "random affine augmentation); test on all 10,000 test images through ONNX Runtime. "
            f"Published into the model repository: {published}"
            " (a bidirectional variant only when it beats digit_lstm's test accuracy)."
        )
    if "forecast" in found:
        b = found["forecast"]["budget"]
        lines.append(
            f"Forecaster: training.cells.CellForecaster, hidden {b['forecast_hidden_size']}, one layer, "
            f"{b['forecast_epochs']} × {b['forecast_steps']} steps of {b['forecast_batch_size']} fresh "
            "series of the v1 family; its train − test gap compares the first training batch (seen "
            "once) with the protocol: the data are drawn afresh, so there is nothing to memorise."
        )
    if "speed" in found:
        s = found["speed"]
        lines.append(
            f"Speed: {s['rounds']} interleaved rounds, median; ONNX Runtime {s['seconds_per_measurement']} s "
            "per measurement, 2 intra-op threads, spinning off. Other work shared the cores: compare ratios."
        )
    return [" ".join(lines)] if lines else []


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
