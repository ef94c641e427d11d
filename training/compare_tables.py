"""The tables of `python -m training.compare`'s report, in markdown, from the sections' JSON."""

from __future__ import annotations

from typing import Any

import numpy as np

from training.cells import CELL_TYPES
from training.digit_recipe import DigitRecipe
from training.memory_probe import longest_remembered


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


def budget_lines(found: dict[str, Any]) -> list[str]:
    """What every variant got, and which digit variants went into the model repository."""
    lines = []
    if "digits" in found:
        b = found["digits"]["budget"]
        published = ", ".join(found["digits"].get("published", [])) or "none"
        recipe = DigitRecipe()
        lines.append(
            f"Digits: {b['digit_epochs']} epochs over {b['digit_train_images']:,} images, batch "
            f"{b['digit_batch_size']}, hidden {b['digit_hidden_size']} (per direction), {b['digit_layers']} "
            f"layers, digit_lstm's recipe (AdamW one-cycle to {b['digit_lr']}, label smoothing "
            f"{recipe.label_smoothing}, random affine augmentation); test on {b['digit_test_images']:,} "
            "test images through ONNX Runtime. "
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
