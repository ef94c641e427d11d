"""Which graph of a model version answers: its float graph, or its int8 variant.

A version written by `training.quantize` carries `variants.int8` in its metadata.json: the int8 graph's
file and its measurements beside the float graph on the MNIST test set. RNNSERVE_PRECISION chooses:

- `fp32`: the float graph of every model;
- `int8`: the int8 variant of every model that has one (the others answer in float);
- `auto` (the default): the int8 variant on the CPU where its measurements show that it pays and keeps
  the service's promises: accuracy at most 0.1 point below the float graph's, expected calibration
  error at most 0.005 above it, at least 1.1× less CPU per image at batch 64 and at most 1.1× more for
  a lone image, answers that do not depend on the batch they were computed in, all measured with as
  many ONNX Runtime threads as each model call gets here. On a GPU, float: ONNX Runtime runs the int8
  operators on the CPU.

`training.quantize` computes every row of a batch on its own (fixed activation scales, training.int8_graph).
A variant made with ONNX Runtime's dynamic quantization (`quantize_dynamic`) would not: it sets each call's
activation scales from the whole batch, so an image's probabilities move with the images batched beside
it (by up to 0.006 for `digit_lstm`). Its recorded batch difference keeps `auto` from serving it; `int8`
would, for whoever prefers the speed.

The choice and its reason are part of the model's artifact, so that the answers, GET /models and the
metrics say which precision answered and why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from service.repository import ModelArtifact, verify

Precision = Literal["auto", "fp32", "int8"]

MAX_ACCURACY_DROP_POINTS = 0.1
MAX_ECE_RISE = 0.005
MIN_SPEEDUP = 1.1
MAX_LONE_SLOWDOWN = 1.1
MAX_BATCH_DIFFERENCE = 1e-5
"""Float rounding: how far the service's own tests let a float answer move with its batch."""


@dataclass(frozen=True)
class Choice:
    precision: str
    file: str | None
    """The variant's graph, relative to the version's folder; None for the float graph."""
    reason: str


def _float(metadata: dict[str, Any], reason: str) -> Choice:
    return Choice(str(metadata.get("precision", "fp32")), None, reason)


def refusals(metrics: dict[str, Any]) -> list[str]:
    """Why `auto` would not serve an int8 variant with these measurements, each completing "the int8
    variant ..." (none: it would)."""
    try:
        drop = float(metrics["accuracy_drop_points"])
        ece_rise = float(metrics["test_ece"]) - float(metrics["test_ece_fp32"])
        speedup = float(metrics["cpu_speedup"])
        lone = float(metrics["cpu_us_per_image_batch1"]) / float(metrics["cpu_us_per_image_batch1_fp32"])
        batch_difference = float(metrics["batch_max_probability_difference"])
    except (KeyError, TypeError, ValueError):
        return ["has no accuracy, calibration, speed and batch measurements in metadata.json"]
    found = []
    if drop > MAX_ACCURACY_DROP_POINTS:
        found.append(
            f"is {drop:.2f} point less accurate than the float graph (at most "
            f"{MAX_ACCURACY_DROP_POINTS} allowed)"
        )
    if ece_rise > MAX_ECE_RISE:
        found.append(
            f"has a calibration error {ece_rise:.4f} above the float graph's (at most {MAX_ECE_RISE} allowed)"
        )
    if speedup < MIN_SPEEDUP:
        found.append(
            f"is not faster on the CPU ({speedup:.2f}× the float graph's speed, at least "
            f"{MIN_SPEEDUP}× wanted)"
        )
    if lone > MAX_LONE_SLOWDOWN:
        found.append(
            f"takes {lone:.2f}× the float graph's CPU for a lone image (at most {MAX_LONE_SLOWDOWN}× "
            "allowed: a request alone would wait longer)"
        )
    if batch_difference > MAX_BATCH_DIFFERENCE:
        found.append(
            f"gives answers that depend on their batch (a probability moves by up to "
            f"{batch_difference:.4f} between an image alone and in a batch)"
        )
    return found


def choose(
    metadata: dict[str, Any], wanted: Precision, backend: str, threads: int, on_gpu: Callable[[], bool]
) -> Choice:
    """The graph to serve of a version with `metadata`, for model calls of `threads` ONNX Runtime threads;
    `on_gpu` says whether the models run on a GPU (asked only when it matters)."""
    variant = metadata.get("variants", {}).get("int8")
    if not isinstance(variant, dict):
        return _float(metadata, "the version has no int8 variant")
    if wanted == "fp32":
        return _float(metadata, "RNNSERVE_PRECISION=fp32")
    if backend != "onnx":
        return _float(
            metadata, f"the int8 variant is an ONNX graph; the {backend} backend runs the float model"
        )
    if wanted == "int8":
        return Choice("int8", str(variant["onnx_file"]), "RNNSERVE_PRECISION=int8")
    if on_gpu():
        return _float(metadata, "auto on a GPU: float, since ONNX Runtime runs int8 operators on the CPU")
    metrics = variant.get("metrics", {})
    if variant.get("dry_run"):
        return _float(metadata, "auto: float, since the int8 variant was measured in a dry run only")
    metrics = metrics if isinstance(metrics, dict) else {}
    measured_with = metrics.get("threads")
    if measured_with != threads:
        return _float(
            metadata,
            f"auto: float, since the int8 variant was measured with {measured_with} ONNX Runtime thread(s) "
            f"and each model call here gets {threads} (RNNSERVE_THREADS)",
        )
    found = refusals(metrics)
    if found:
        return _float(metadata, "auto: float, since the int8 variant " + " and ".join(found))
    return Choice(
        "int8",
        str(variant["onnx_file"]),
        f"auto on the CPU: int8, {metrics['cpu_speedup']:.2f}× less CPU per image at batch 64, test accuracy "
        f"{100 * metrics['test_accuracy']:.2f} % (float {100 * metrics['test_accuracy_fp32']:.2f} %)",
    )


def select(
    artifact: ModelArtifact, wanted: Precision, backend: str, threads: int, on_gpu: Callable[[], bool]
) -> ModelArtifact:
    """`artifact` with the graph `choose` picks, verified against its checksum; raises `ModelLoadError`."""
    choice = choose(artifact.metadata, wanted, backend, threads, on_gpu)
    file = artifact.file
    if choice.file is not None:
        file = artifact.directory / choice.file
        verify(file, artifact.metadata.get("files", {}).get(choice.file))
    return dataclasses.replace(
        artifact, file=file, precision=choice.precision, precision_reason=choice.reason
    )
