"""int8 variants of the digit classifiers whose answers do not depend on their batch, measured against
their float graphs on the MNIST test set.

python -m training.quantize --data-dir ../shared/data --model-dir models --out models
python -m training.quantize --data-dir ../shared/data --dry-run

For each model the float graph of the newest version is read, and its recurrent layers are computed in
integers at fixed scales (training.int8_graph): an LSTM layer as ONNX Runtime's fused
DynamicQuantizeLSTM with its ranges held fixed (training.int8_lstm), a GRU or RNN layer unrolled with
one integer matrix product per step; 7-bit weights per output column, hidden states as uint8 over their
(-1, 1) range, the first layer's input over the range of raw pixels (0-255, one level each). ONNX
Runtime's dynamic quantization (`quantize_dynamic`) is not used: it scales each call's activations by the
range of the whole batch, so its answers move with the batch, and it has no integer GRU or RNN. The gates'
nonlinearities, the head and the temperature scaling (training.calibrate) stay float. Both graphs are
then measured on the test images with --threads ONNX Runtime threads (1 by default, what each of several
workers gets): accuracy, argmax agreement, largest probability difference, ECE, CPU time per image at
batch 1 and 64, and how far a probability moves between an image alone and in a batch.

With --out, the next version `<out>/<name>/<newest + 1>/` is written: the float files unchanged (a
former int8 graph is replaced), model.int8.onnx beside them, and metadata.json with the variant and its
measurements under `variants.int8`. The float graph stays the version's `onnx_file`; the service chooses
which one answers (service.precision). Without --out nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from service.repository import newest_version, read_metadata, sha256_of
from service.tasks.digits import PIXEL_RANGE
from training.calibrate import DIGIT_MODELS, expected_calibration_error
from training.common import repository_arguments, setup_logging
from training.data import MnistTestSet, load_test_set
from training.export import (
    METADATA_FILE,
    ONNX_FILE,
    command_line,
    library_versions,
    next_version,
    onnx_session,
)
from training.int8_graph import HIDDEN, WEIGHT_LEVELS, int8_graph
from training.int8_lstm import activation_peaks
from training.loop import chunks
from training.temperature_scaling import PROBABILITIES

logger = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
TIMING_BATCH = 64
TIMING_BATCHES = 32
DRY_RUN_TIMING_BATCHES = 4
TIMING_REPEATS = 11
EVALUATION_BATCH = 1_000
BATCH_CHECK_IMAGES = 2_048


def probabilities_of(path: Path, images: np.ndarray, threads: int, label: str) -> np.ndarray:
    """The `probabilities` of a digit model's ONNX graph for uint8 `images`, in batches."""
    session = onnx_session(path, threads)
    pixels = images.astype(np.float32)
    parts = list(chunks(len(images), EVALUATION_BATCH))
    outputs = [
        session.run([PROBABILITIES], {"pixels": pixels[part]})[0]
        for part in tqdm(parts, desc=label, unit="batch", mininterval=2.0, disable=len(parts) < 3)
    ]
    return np.concatenate(outputs)


def batch_dependence(path: Path, images: np.ndarray, threads: int) -> float:
    """The largest difference between a probability computed alone and the same one computed in a batch
    of TIMING_BATCH: 0 for a graph whose answers do not depend on their batch. Dynamic quantization sets
    each call's activation scales from the whole batch, so an int8 graph's answers can."""
    session = onnx_session(path, threads)
    pixels = images.astype(np.float32)
    batched = [
        session.run([PROBABILITIES], {"pixels": pixels[p]})[0] for p in chunks(len(pixels), TIMING_BATCH)
    ]
    alone = [session.run([PROBABILITIES], {"pixels": pixels[i : i + 1]})[0] for i in range(len(pixels))]
    return float(np.abs(np.concatenate(batched) - np.concatenate(alone)).max())


@dataclass(frozen=True)
class Comparison:
    """An int8 graph beside its float one on the same labelled images."""

    float_probabilities: np.ndarray
    int8_probabilities: np.ndarray
    labels: np.ndarray

    def accuracy(self, probabilities: np.ndarray) -> float:
        return float((probabilities.argmax(axis=1) == self.labels).mean())

    def summary(self) -> dict[str, float]:
        ours, theirs = self.int8_probabilities, self.float_probabilities
        return {
            "test_accuracy": self.accuracy(ours),
            "test_accuracy_fp32": self.accuracy(theirs),
            "accuracy_drop_points": 100 * (self.accuracy(theirs) - self.accuracy(ours)),
            "argmax_agreement": float((ours.argmax(axis=1) == theirs.argmax(axis=1)).mean()),
            "max_probability_difference": float(np.abs(ours - theirs).max()),
            "test_ece": expected_calibration_error(ours, self.labels),
            "test_ece_fp32": expected_calibration_error(theirs, self.labels),
        }


def cpu_microseconds_per_image(
    paths: list[Path], images: np.ndarray, threads: int, batch: int, repeats: int = TIMING_REPEATS
) -> list[float]:
    """CPU time (`time.process_time`) per image of each graph, in batches of `batch` over `images`: the
    graphs take turns in every repeat, after one warm-up pass each; the median of `repeats` per graph."""
    sessions = [onnx_session(path, threads) for path in paths]
    calls = [images[part].astype(np.float32) for part in chunks(len(images), batch)]
    samples: list[list[float]] = [[] for _ in sessions]
    for session in sessions:
        session.run(None, {"pixels": calls[0]})
    for _ in tqdm(range(repeats), desc="timing", unit="repeat", mininterval=2.0):
        for session, taken in zip(sessions, samples, strict=True):
            start = time.process_time()
            for pixels in calls:
                session.run(None, {"pixels": pixels})
            taken.append((time.process_time() - start) / len(images) * 1e6)
    return [statistics.median(taken) for taken in samples]


@dataclass(frozen=True)
class Quantized:
    """One model's int8 variant: what it replaced, and it measured beside its float graph."""

    name: str
    source: Path
    replaced: list[dict[str, str]]
    comparison: Comparison
    microseconds: dict[int, tuple[float, float]]  # batch -> (float, int8)
    sizes: tuple[int, int]  # float, int8
    batch_differences: tuple[float, float]  # float, int8
    threads: int  # ONNX Runtime intra-op threads of every measurement

    def metrics(self) -> dict[str, Any]:
        timings: dict[str, float] = {}
        for batch, (theirs, ours) in self.microseconds.items():
            timings |= {f"cpu_us_per_image_batch{batch}": ours, f"cpu_us_per_image_batch{batch}_fp32": theirs}
        return self.comparison.summary() | {
            "threads": self.threads,
            "batch_max_probability_difference": self.batch_differences[1],
            "batch_max_probability_difference_fp32": self.batch_differences[0],
            "batch_check_images": min(BATCH_CHECK_IMAGES, len(self.comparison.labels)),
            "test_images": len(self.comparison.labels),
            **timings,
            "cpu_speedup": timings[f"cpu_us_per_image_batch{TIMING_BATCH}_fp32"]
            / timings[f"cpu_us_per_image_batch{TIMING_BATCH}"],
            "onnx_bytes": self.sizes[1],
            "onnx_bytes_fp32": self.sizes[0],
        }

    def variant(self, test: MnistTestSet, threads: int) -> dict[str, Any]:
        return {
            "onnx_file": INT8_FILE,
            "precision": "int8",
            "method": (
                "training.int8_graph: each LSTM layer one com.microsoft.DynamicQuantizeLSTM at fixed "
                "scales (training.int8_lstm: the input's range held by two constant columns, the hidden "
                "state's by two units held at the largest and smallest value a unit reaches; form "
                "'fused'); GRU and RNN layers unrolled over their steps, one integer product per step of "
                "the step's input and hidden state, both uint8 at fixed scales, by the stacked input and "
                "recurrent weights (com.microsoft.MatMulIntegerToFloat; form 'unrolled'); hidden states "
                "in (-1, 1), the first layer's input over the range of raw pixels, one level per value, "
                "7-bit weights per output column, so every row is computed on its own; the gates' "
                "nonlinearities, the head and the temperature scaling in float"
            ),
            "settings": {
                "weight_levels": WEIGHT_LEVELS,
                "hidden_scale": HIDDEN.scale,
                "hidden_zero_point": HIDDEN.zero,
                "input_ranges": {"pixels": list(PIXEL_RANGE)},
            }
            | (
                {"lstm_held_units": dataclasses.asdict(activation_peaks())}
                if any(r.get("form") == "fused" for r in self.replaced)
                else {}
            ),
            "quantized_ops": self.replaced,
            "measured_on": (
                f"the first {len(test.labels):,} MNIST test images (of 10,000), ONNX Runtime "
                f"{library_versions()['onnxruntime']} on the CPU with {threads} intra-op thread(s); CPU time "
                f"is time.process_time, median of {TIMING_REPEATS} interleaved repeats, cpu_speedup at batch "
                f"{TIMING_BATCH}; batch dependence on the first {self.metrics()['batch_check_images']} test "
                f"images, each alone and in batches of {TIMING_BATCH}"
            ),
            "dry_run": test.dry_run,
            "metrics": self.metrics(),
        }


def quantize_model(name: str, model_dir: Path, work: Path, test: MnistTestSet, threads: int) -> Quantized:
    """The int8 graph of the newest version of `name`, written to `work/<name>/INT8_FILE`, and measured
    beside its float graph."""
    source = newest_version(model_dir, name)
    metadata = read_metadata(source)
    if metadata.get("task") != "digit-classification":
        raise SystemExit(
            f"{source}: is a {metadata.get('task')!r} model; only digit classifiers are quantized here: "
            f"name them with --models (default {','.join(DIGIT_MODELS)})"
        )
    float_graph = source / ONNX_FILE
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    int8_file = folder / INT8_FILE
    replaced = int8_graph(float_graph, int8_file, {"pixels": PIXEL_RANGE})
    logger.info(
        "%s v%s: %s in integers",
        name,
        source.name,
        ", ".join(f"{n['node']} ({n['form']})" for n in replaced),
    )
    comparison = Comparison(
        probabilities_of(float_graph, test.images, threads, f"{name} v{source.name} test"),
        probabilities_of(int8_file, test.images, threads, f"{name} int8 test"),
        test.labels,
    )
    batches = DRY_RUN_TIMING_BATCHES if test.dry_run else TIMING_BATCHES
    microseconds = {}
    for batch, count in ((1, TIMING_BATCH * batches // 16), (TIMING_BATCH, TIMING_BATCH * batches)):
        theirs, ours = cpu_microseconds_per_image(
            [float_graph, int8_file], test.images[:count], threads, batch
        )
        microseconds[batch] = (theirs, ours)
    checked = test.images[:BATCH_CHECK_IMAGES]
    return Quantized(
        name=name,
        source=source,
        replaced=replaced,
        comparison=comparison,
        microseconds=microseconds,
        sizes=(float_graph.stat().st_size, int8_file.stat().st_size),
        batch_differences=(
            batch_dependence(float_graph, checked, threads),
            batch_dependence(int8_file, checked, threads),
        ),
        threads=threads,
    )


def write_version(
    done: Quantized,
    work: Path,
    model_dir: Path,
    out: Path,
    test: MnistTestSet,
    threads: int,
    argv: list[str],
) -> Path:
    """Write `<out>/<name>/<newest + 1>/`: the newest version's files unchanged, INT8_FILE, and its
    metadata.json with the new version, checksums of every file and the int8 variant."""
    target = out / done.name / next_version(model_dir / done.name)
    if target.exists():
        raise SystemExit(f"{target}: already exists; remove it, or write elsewhere with --out")
    old = read_metadata(done.source)
    target.mkdir(parents=True)
    copied = [
        p for p in sorted(done.source.iterdir()) if p.is_file() and p.name not in (METADATA_FILE, INT8_FILE)
    ]
    for path in copied:
        shutil.copy2(path, target / path.name)
    shutil.copy2(work / done.name / INT8_FILE, target / INT8_FILE)
    files = {
        path.name: {"sha256": sha256_of(path), "bytes": path.stat().st_size}
        for path in sorted(target.iterdir())
        if path.name != METADATA_FILE
    }
    document = old | {
        "version": target.name,
        "derived_from": {"version": done.source.name, "files": old["files"]},
        "precision": "fp32",
        "variants": {"int8": done.variant(test, threads)},
        "files": files,
        "libraries": library_versions(),
        "command": command_line("training.quantize", argv),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (target / METADATA_FILE).write_text(json.dumps(document, indent=2) + "\n")
    return target


def table(results: list[Quantized]) -> str:
    """The measurements of every model, one row each, as plain text."""
    header = (
        f"{'model':<14}{'acc fp32':>9}{'acc int8':>9}{'drop pt':>8}{'agree':>8}{'max dp':>8}{'ECE fp32':>9}"
        f"{'ECE int8':>9}{'us@1 fp32':>10}{'us@1 int8':>10}{'us@64 fp32':>11}{'us@64 int8':>11}{'ratio':>7}"
        f"{'batch dp':>9}  in integers"
    )
    rows = [header]
    for done in results:
        m = done.metrics()
        ops = ", ".join(sorted({op["op_type"] for op in done.replaced})) or "nothing"
        label = f"{done.name} v{done.source.name}"
        rows.append(
            f"{label:<14}{m['test_accuracy_fp32']:>9.4f}{m['test_accuracy']:>9.4f}"
            f"{m['accuracy_drop_points']:>8.2f}{m['argmax_agreement']:>8.4f}"
            f"{m['max_probability_difference']:>8.4f}{m['test_ece_fp32']:>9.4f}{m['test_ece']:>9.4f}"
            f"{m['cpu_us_per_image_batch1_fp32']:>10.1f}{m['cpu_us_per_image_batch1']:>10.1f}"
            f"{m['cpu_us_per_image_batch64_fp32']:>11.1f}{m['cpu_us_per_image_batch64']:>11.1f}"
            f"{m['cpu_speedup']:>7.2f}{m['batch_max_probability_difference']:>9.1e}  {ops}"
        )
    return "\n".join(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Quantize each digit model's newest version to int8 and measure it beside the float one."
    )
    repository_arguments(parser, DIGIT_MODELS)
    parser.add_argument(
        "--out",
        type=Path,
        help="repository root to write the new versions into (default: write nothing, only print)",
    )
    parser.add_argument("--dry-run", action="store_true", help="measure on the first 1,000 test images only")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Quantized]:
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads < 1:
        raise SystemExit(f"--threads {args.threads}: give 1 or more")
    if args.dry_run and args.out and args.out.resolve().is_relative_to(args.model_dir.resolve()):
        raise SystemExit("--dry-run writes nothing into --model-dir: give --out a folder outside it, or none")
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    test = load_test_set(args.data_dir, args.dry_run)
    results = []
    with tempfile.TemporaryDirectory(prefix="quantize-") as scratch:
        work = Path(scratch)
        for name in names:
            done = quantize_model(name, args.model_dir, work, test, args.threads)
            results.append(done)
            if args.out is not None:
                target = write_version(done, work, args.model_dir, args.out, test, args.threads, argv)
                logger.info("%s: wrote %s", name, target)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
