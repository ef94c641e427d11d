"""The speed half of `python -m training.compare`: training steps of every network and ONNX Runtime
throughput of every export, measured interleaved (the cores are shared, so only ratios within one
run mean much), and what the machine was."""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training import loop
from training.cells import CELL_TYPES, CellForecaster, DigitRecurrent, cell_type
from training.compare_runs import VARIANTS, Budget
from training.data import load_mnist
from training.evaluate_forecast import EVAL_HISTORY, EVAL_HORIZON
from training.export import onnx_session
from training.forecast import MIN_LENGTH, forecast_loss, training_batch
from training.networks import IMAGE_SIZE, NUM_CLASSES

logger = logging.getLogger(__name__)


Workload = tuple[tuple[torch.Tensor, ...], Callable[[nn.Module, Any], loop.StepLoss]]
"""A fixed training batch and the loss of a step on it."""


def step_seconds(network: nn.Module, workload: Workload, steps: int) -> float:
    """Median seconds of a training step (forward, backward, AdamW), after two warm-up steps."""
    batch, loss_of = workload
    optimizer = torch.optim.AdamW(network.parameters())
    trained = loop.train(
        network, optimizer, itertools.repeat(batch), loss_of, steps=2 + steps, clip_norm=None
    )
    return float(np.median(trained.step_seconds[2:]))


def workloads(budget: Budget, seed: int) -> dict[str, Workload]:
    """One fixed batch and its loss for each digit variant and each forecaster cell, by model name."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(budget.digit_batch_size, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 255
    labels = torch.randint(0, NUM_CLASSES, (budget.digit_batch_size,), generator=generator)
    series = training_batch(
        np.random.default_rng(seed), budget.forecast_batch_size, EVAL_HISTORY, EVAL_HORIZON, MIN_LENGTH
    )
    digit: Workload = ((images, labels), loop.classification_loss)
    forecast: Workload = (series, forecast_loss)
    return {f"digit_{name}": digit for name in VARIANTS} | {
        f"forecast_{cell}": forecast for cell in CELL_TYPES
    }


def fresh_network(model: str, budget: Budget) -> nn.Module:
    kind, name = model.split("_", 1)
    if kind == "digit":
        cell, bidirectional = VARIANTS[name]
        return DigitRecurrent(cell, budget.digit_hidden_size, budget.digit_layers, 0.1, bidirectional)
    return CellForecaster(cell_type(name), budget.forecast_hidden_size, max_horizon=EVAL_HORIZON)


def run_speed(args: argparse.Namespace, budget: Budget) -> dict[str, Any]:
    """Training steps of every network and ONNX Runtime throughput of every export, interleaved in rounds."""
    exports: dict[str, Path] = {}
    for section, key, prefix in (("digits", "variants", "digit_"), ("forecast", "cells", "forecast_")):
        if section in args.done:
            document = json.loads((args.report_dir / f"{section}.json").read_text())
            exports |= {prefix + name: Path(r["onnx"]) for name, r in document[key].items()}
    pixels = load_mnist(args.data_dir, train=False)[0][:64].numpy().astype(np.float32)
    series = np.random.default_rng(args.seed).normal(size=(64, EVAL_HISTORY)).astype(np.float32)
    feeds = {"digit": {"pixels": pixels}, "forecast": {"series": series, "mask": np.ones_like(series)}}
    losses = workloads(budget, args.seed)
    steps: dict[str, list[float]] = {model: [] for model in losses}
    throughput: dict[str, dict[str, list[float]]] = {model: {"1": [], "64": []} for model in exports}
    for round_number in range(budget.speed_rounds):
        for model, workload in losses.items():
            steps[model].append(step_seconds(fresh_network(model, budget), workload, budget.speed_steps))
        for model, path in exports.items():
            for batch in (1, 64):
                rate = onnx_throughput(path, feeds[model.split("_")[0]], batch, budget.speed_seconds)
                throughput[model][str(batch)].append(rate)
        logger.info("speed round %d/%d done", round_number + 1, budget.speed_rounds)
    step_medians = {model: float(np.median(v)) for model, v in steps.items()}
    epoch_steps = math.ceil(60_000 / budget.digit_batch_size)
    return {
        "training_step_seconds": step_medians,
        "training_epoch_seconds_estimate": {
            name: step_medians[f"digit_{name}"] * epoch_steps for name in VARIANTS
        },
        "forecast_epoch_seconds_estimate": {
            cell: step_medians[f"forecast_{cell}"] * budget.forecast_steps for cell in CELL_TYPES
        },
        "onnx_items_per_second": {
            model: {batch: float(np.median(v)) for batch, v in runs.items()}
            for model, runs in throughput.items()
        },
        "rounds": budget.speed_rounds,
        "seconds_per_measurement": budget.speed_seconds,
        "training_batch": {"digits": budget.digit_batch_size, "forecast": budget.forecast_batch_size},
    }


def onnx_throughput(path: Path, feeds: dict[str, np.ndarray], batch: int, seconds: float) -> float:
    """Items a second through ONNX Runtime (2 intra-op threads, no spinning) at `batch`, over `seconds`."""
    session = onnx_session(path, threads=2)
    inputs = {name: np.ascontiguousarray(value[:batch]) for name, value in feeds.items()}
    session.run(None, inputs)
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or runs < 3:
        session.run(None, inputs)
        runs += 1
    return runs * batch / elapsed


def hardware(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""

    cpuinfo = Path("/proc/cpuinfo")
    models = (
        [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        if cpuinfo.exists()
        else []
    )
    return {
        "cpu": models[0] if models else platform.processor(),
        "cores": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__,
        "gpu": "none used",
        "load_average": os.getloadavg(),
    }
