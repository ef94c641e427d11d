"""RNN vs LSTM vs GRU (and bidirectional LSTM and GRU), measured with one budget and one seed.

    python -m training.compare --data-dir ../shared/data        # full run, into reports/compare/
    python -m training.compare --data-dir ../shared/data --dry-run --report-dir /tmp/compare

Sections (each saved as <report-dir>/<section>.json, so `--sections report` rebuilds the table and
plots from what earlier runs left): `digits` trains every variant on row-wise MNIST with digit_lstm's
recipe, exports it with digit_lstm's interface and scores it with ONNX Runtime; `forecast` trains
`training.cells.CellForecaster` per cell on the sine family and runs forecast protocol v1; `speed`
times training steps and ONNX Runtime inference of every export, interleaved; `memory` runs the
copy-first probe (`training.memory_probe`) at every length, and `memory_long` again at L = 100 with
three times the steps. A full run copies digit_rnn and digit_gru (and the
bidirectional ones when they beat digit_lstm's test accuracy) into the model repository.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from training import compare_report
from training.cells import CELL_TYPES
from training.common import setup_logging, write_json
from training.compare_runs import DRY_RUN, VARIANTS, Budget, run_digits, run_forecast
from training.compare_speed import hardware, run_speed
from training.memory_probe import ProbeBudget, run_probe

logger = logging.getLogger(__name__)

ALWAYS_PUBLISHED = ("rnn", "gru")
SECTIONS = ("digits", "forecast", "speed", "memory", "memory_long", "report")


def publish(args: argparse.Namespace, digits: dict[str, Any]) -> list[str]:
    """Copy digit_rnn, digit_gru and the bidirectional variants that beat digit_lstm into `args.out`."""
    reference = json.loads((args.out / "digit_lstm" / "1" / "metadata.json").read_text())
    bar = reference["metrics"]["test_accuracy_onnx"]
    published = []
    for name, result in digits["variants"].items():
        if name in ALWAYS_PUBLISHED or (VARIANTS[name][1] and result["test_accuracy"] > bar):
            target = args.out / f"digit_{name}" / "1"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(args.report_dir / "models" / f"digit_{name}" / "1", target)
            published.append(str(target))
    return published


def partial_writer(path: Path) -> Callable[[dict[str, Any]], None]:
    return lambda document: write_json(path, document)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Measure RNN vs LSTM vs GRU: size, speed, accuracy, memory.")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="folder holding MNIST/raw")
    parser.add_argument("--report-dir", type=Path, default=Path("reports/compare"))
    parser.add_argument("--out", type=Path, default=Path("models"), help="model repository (full runs only)")
    parser.add_argument(
        "--docs-dir", type=Path, default=Path("docs"), help="where the plots are copied (full runs)"
    )
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: %(default)s")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="digit variants (default %(default)s)")
    parser.add_argument("--digit-epochs", type=int, help=f"default {Budget.digit_epochs}")
    parser.add_argument("--probe-steps", type=int, help=f"default {ProbeBudget.steps}")
    parser.add_argument(
        "--probe-lengths", help="comma-separated, default " + ",".join(map(str, Budget.probe_lengths))
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny budget, in seconds; never writes models/ or docs/"
    )
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    args.variants = args.variants.split(",")
    unknown = [s for s in sections if s not in SECTIONS] + [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(
            f"unknown section or variant {unknown[0]!r}: sections are {', '.join(SECTIONS)}; "
            f"variants {', '.join(VARIANTS)}"
        )
    budget = DRY_RUN if args.dry_run else Budget()
    if args.digit_epochs:
        budget = replace(budget, digit_epochs=args.digit_epochs)
    if args.probe_steps:
        budget = replace(budget, probe=replace(budget.probe, steps=args.probe_steps))
    if args.probe_lengths:
        budget = replace(budget, probe_lengths=tuple(int(n) for n in args.probe_lengths.split(",")))
    torch.set_num_threads(args.threads)
    args.report_dir.mkdir(parents=True, exist_ok=True)
    args.done = {s for s in SECTIONS if (args.report_dir / f"{s}.json").exists()}
    for section in sections:
        started = time.perf_counter()
        if section == "digits":
            result = run_digits(args, budget, argv)
            if not args.dry_run:
                result["published"] = publish(args, result)
        elif section == "forecast":
            result = run_forecast(args, budget)
        elif section == "speed":
            result = run_speed(args, budget)
        elif section in ("memory", "memory_long"):
            lengths, probe = (
                (budget.probe_lengths, budget.probe)
                if section == "memory"
                else (budget.long_probe_lengths, budget.long_probe)
            )
            partial = partial_writer(args.report_dir / f"{section}.partial.json")
            result = run_probe(list(CELL_TYPES), list(lengths), probe, args.seed, partial)
        else:
            compare_report.write_report(args.report_dir, None if args.dry_run else args.docs_dir)
            continue
        result["wall_seconds"] = round(time.perf_counter() - started, 1)
        result["hardware"] = hardware(args.threads)
        write_json(args.report_dir / f"{section}.json", result)
        args.done.add(section)
        logger.info("section %s done in %.0f s", section, result["wall_seconds"])


if __name__ == "__main__":
    main()
