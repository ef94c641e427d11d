"""int8 variants of the digit classifiers: ONNX Runtime's dynamic quantization of each model's newest
version, measured against its float graph on the MNIST test set.

python -m training.quantize --data-dir ../shared/data --model-dir models --out /tmp/int8_models
python -m training.quantize --data-dir ../shared/data --dry-run

For each model the newest version is read and quantized with `onnxruntime.quantization.quantize_dynamic`:
int8 weights (per channel or per tensor, whichever does better on seeded MNIST training images), uint8
activations quantized per batch at run time. ONNX Runtime quantizes LSTM, MatMul and Gemm this way; GRU and
RNN nodes stay float. The nodes that scale the logits by their temperature (training.calibrate) stay float
too: they compute the confidences the calibration was fitted for. Both graphs are then measured on the
test images with one ONNX Runtime thread: accuracy, argmax agreement, largest probability difference, ECE
and CPU time per image at batch 64.

With --out, the next version `<out>/<name>/<newest + 1>/` is written: the newest version's float files
unchanged, model.int8.onnx beside them, and metadata.json with the variant and its measurements under
`variants.int8`. The float graph stays the `onnx_file` that is served. Without --out nothing is written.
"""

from __future__ import annotations

import argparse
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
from training.calibrate import DIGIT_MODELS, MnistSplits, expected_calibration_error, load_splits
from training.common import setup_logging
from training.export import (
    METADATA_FILE,
    ONNX_FILE,
    command_line,
    library_versions,
    next_version,
    onnx_session,
)
from training.loop import chunks
from training.temperature_scaling import PROBABILITIES, RAW_PREFIX

logger = logging.getLogger(__name__)

INT8_FILE = "model.int8.onnx"
WEIGHT_TYPE = "QInt8"
WEIGHTED_OPS = ("LSTM", "GRU", "RNN", "Gemm", "MatMul")
TIMING_BATCH = 64
TIMING_BATCHES = 32
DRY_RUN_TIMING_BATCHES = 4
TIMING_REPEATS = 11
EVALUATION_BATCH = 1_000


def scaling_nodes(model: Any) -> list[str]:
    """The nodes of a calibrated graph that compute on the raw logits (the temperature scaling and the
    Softmax): everything downstream of `raw_<logits>`. None in an uncalibrated graph but the Softmax."""
    graph = model.graph
    softmax = next(n for n in graph.node if n.op_type == "Softmax" and PROBABILITIES in n.output)
    produced = {output for node in graph.node for output in node.output}
    raw = RAW_PREFIX + softmax.input[0]
    reached = {raw if raw in produced else softmax.input[0]}
    names = []
    for node in graph.node:  # an ONNX graph is topologically sorted
        if reached.intersection(node.input):
            reached.update(node.output)
            names.append(node.name)
    return names


def quantize(source: Path, target: Path, per_channel: bool) -> None:
    """Write the dynamically quantized graph of `source` (int8 weights) to `target`, leaving the logits'
    scaling in float."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = scaling_nodes(onnx.load(str(source)))
    quantize_dynamic(
        source,
        target,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=False,
        nodes_to_exclude=excluded,
    )


def quantized_ops(source: Path, target: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The weighted nodes of `source` (LSTM, GRU, RNN, Gemm, MatMul) that `target` replaced with integer
    ones, and those it kept in float, each as {node, op_type}."""
    import onnx

    kept = {node.name for node in onnx.load(str(target)).graph.node}
    weighted = [n for n in onnx.load(str(source)).graph.node if n.op_type in WEIGHTED_OPS]
    replaced = [{"node": n.name, "op_type": n.op_type} for n in weighted if n.name not in kept]
    left = [{"node": n.name, "op_type": n.op_type} for n in weighted if n.name in kept]
    return replaced, left


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

    def rank(self) -> tuple[float, float, float]:
        """Higher is better: accuracy, then agreement with the float graph, then closeness to it."""
        summary = self.summary()
        return (
            summary["test_accuracy"],
            summary["argmax_agreement"],
            -summary["max_probability_difference"],
        )


def cpu_microseconds_per_image(
    paths: list[Path], images: np.ndarray, threads: int, repeats: int = TIMING_REPEATS
) -> list[float]:
    """CPU time (`time.process_time`) per image of each graph, at batch TIMING_BATCH over `images`: the
    graphs take turns in every repeat, after one warm-up pass each; the median of `repeats` per graph."""
    sessions = [onnx_session(path, threads) for path in paths]
    batches = [images[part].astype(np.float32) for part in chunks(len(images), TIMING_BATCH)]
    samples: list[list[float]] = [[] for _ in sessions]
    for session in sessions:
        session.run(None, {"pixels": batches[0]})
    for _ in tqdm(range(repeats), desc="timing", unit="repeat", mininterval=2.0):
        for session, taken in zip(sessions, samples, strict=True):
            start = time.process_time()
            for batch in batches:
                session.run(None, {"pixels": batch})
            taken.append((time.process_time() - start) / len(images) * 1e6)
    return [statistics.median(taken) for taken in samples]


@dataclass(frozen=True)
class Quantized:
    """One model's int8 variant: how it was made, and it measured beside its float graph."""

    name: str
    source: Path
    per_channel: bool
    replaced: list[dict[str, str]]
    left_float: list[dict[str, str]]
    comparison: Comparison
    choice: dict[str, dict[str, float]]  # "per channel", "per tensor": each on the training images
    microseconds: tuple[float, float]  # float, int8
    sizes: tuple[int, int]  # float, int8

    def metrics(self) -> dict[str, Any]:
        return self.comparison.summary() | {
            "test_images": len(self.comparison.labels),
            "cpu_us_per_image_batch64": self.microseconds[1],
            "cpu_us_per_image_batch64_fp32": self.microseconds[0],
            "cpu_speedup": self.microseconds[0] / self.microseconds[1],
            "onnx_bytes": self.sizes[1],
            "onnx_bytes_fp32": self.sizes[0],
        }

    def variant(self, splits: MnistSplits, threads: int) -> dict[str, Any]:
        granularity = "per channel" if self.per_channel else "per tensor"
        other = "per tensor" if self.per_channel else "per channel"
        return {
            "onnx_file": INT8_FILE,
            "precision": "int8",
            "method": (
                f"onnxruntime.quantization.quantize_dynamic: {WEIGHT_TYPE} weights {granularity}, uint8 "
                "activations quantized per batch at run time; the logits' scaling left in float"
            ),
            "settings": {"weight_type": WEIGHT_TYPE, "per_channel": self.per_channel, "reduce_range": False},
            "quantized_ops": self.replaced,
            "float_ops": self.left_float,
            "weights_chosen": {
                "rule": f"{granularity} over {other}: higher accuracy, then argmax agreement, then the "
                "smaller largest probability difference",
                "on": f"{len(splits.fit_labels):,} seeded MNIST training images (training.calibrate's)",
                **self.choice,
            },
            "measured_on": (
                f"the first {len(splits.test_labels):,} MNIST test images (of 10,000), ONNX Runtime "
                f"{library_versions()['onnxruntime']} on the CPU with {threads} intra-op thread(s); CPU time "
                f"is time.process_time, median of {TIMING_REPEATS} interleaved repeats"
            ),
            "dry_run": splits.dry_run,
            "metrics": self.metrics(),
        }


def quantize_model(name: str, model_dir: Path, work: Path, splits: MnistSplits, threads: int) -> Quantized:
    """Quantize the newest version of `name` into `work/<name>/` (per channel and per tensor, the better
    one on the training images kept as INT8_FILE) and measure it beside the float graph."""
    source = newest_version(model_dir, name)
    metadata = read_metadata(source)
    if metadata.get("task") != "digit-classification":
        raise SystemExit(
            f"{source}: is a {metadata.get('task')!r} model; only digit classifiers are quantized here: "
            f"name them with --models (default {','.join(DIGIT_MODELS)})"
        )
    if "int8" in metadata.get("variants", {}):
        raise SystemExit(f"{source}: already carries an int8 variant; leave {name} out with --models")
    float_graph = source / ONNX_FILE
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    reference = probabilities_of(float_graph, splits.fit_images, threads, f"{name} v{source.name} fit")
    candidates: dict[bool, Comparison] = {}
    for per_channel in (True, False):
        path = folder / f"per_channel_{per_channel}.onnx"
        quantize(float_graph, path, per_channel)
        ours = probabilities_of(path, splits.fit_images, threads, f"{name} int8 fit")
        candidates[per_channel] = Comparison(reference, ours, splits.fit_labels)
    per_channel = max(candidates, key=lambda choice: candidates[choice].rank())
    choice = {
        "per channel" if key else "per tensor": {
            "accuracy": summary["test_accuracy"],
            "argmax_agreement": summary["argmax_agreement"],
            "max_probability_difference": summary["max_probability_difference"],
        }
        for key, summary in ((key, candidates[key].summary()) for key in candidates)
    }
    logger.info("%s: per-channel weights %s, chosen on the training images: %s", name, per_channel, choice)
    int8_graph = folder / INT8_FILE
    (folder / f"per_channel_{per_channel}.onnx").rename(int8_graph)
    comparison = Comparison(
        probabilities_of(float_graph, splits.test_images, threads, f"{name} v{source.name} test"),
        probabilities_of(int8_graph, splits.test_images, threads, f"{name} int8 test"),
        splits.test_labels,
    )
    batches = DRY_RUN_TIMING_BATCHES if splits.dry_run else TIMING_BATCHES
    timed = splits.test_images[: TIMING_BATCH * batches]
    microseconds = cpu_microseconds_per_image([float_graph, int8_graph], timed, threads)
    replaced, left_float = quantized_ops(float_graph, int8_graph)
    return Quantized(
        name=name,
        source=source,
        per_channel=per_channel,
        replaced=replaced,
        left_float=left_float,
        comparison=comparison,
        choice=choice,
        microseconds=(microseconds[0], microseconds[1]),
        sizes=(float_graph.stat().st_size, int8_graph.stat().st_size),
    )


def write_version(
    done: Quantized,
    work: Path,
    model_dir: Path,
    out: Path,
    splits: MnistSplits,
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
    copied = [p for p in sorted(done.source.iterdir()) if p.is_file() and p.name != METADATA_FILE]
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
        "variants": {"int8": done.variant(splits, threads)},
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
        f"{'ECE int8':>9}{'us fp32':>9}{'us int8':>9}{'ratio':>7}{'kB fp32':>9}{'kB int8':>9}  quantized"
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
            f"{m['cpu_us_per_image_batch64_fp32']:>9.1f}{m['cpu_us_per_image_batch64']:>9.1f}"
            f"{m['cpu_speedup']:>7.2f}{m['onnx_bytes_fp32'] / 1000:>9.1f}{m['onnx_bytes'] / 1000:>9.1f}"
            f"  {ops}"
        )
    return "\n".join(rows)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Quantize each digit model's newest version to int8 and measure it beside the float one."
    )
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="folder holding MNIST/raw")
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help="model repository root")
    parser.add_argument(
        "--models", default=",".join(DIGIT_MODELS), help=f"comma-separated (default {','.join(DIGIT_MODELS)})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="repository root to write the new versions into (default: write nothing, only print)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="measure on the first 1,000 test images (and 512 training)"
    )
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training images the choice uses")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Quantized]:
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads < 1:
        raise SystemExit(f"--threads {args.threads}: give 1 or more")
    if args.dry_run and args.out and args.out.resolve().is_relative_to(args.model_dir.resolve()):
        raise SystemExit("--dry-run writes nothing into --model-dir: give --out a folder outside it, or none")
    import torch

    torch.set_num_threads(args.threads)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    splits = load_splits(args.data_dir, args.seed, args.dry_run)
    results = []
    with tempfile.TemporaryDirectory(prefix="quantize-") as scratch:
        work = Path(scratch)
        for name in names:
            done = quantize_model(name, args.model_dir, work, splits, args.threads)
            results.append(done)
            if args.out is not None:
                target = write_version(done, work, args.model_dir, args.out, splits, args.threads, argv)
                logger.info("%s: wrote %s", name, target)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
