"""Calibrated confidences for the digit classifiers: a scaling of the logits (training.temperature_scaling)
fitted per model on MNIST training images, folded into a new version whose graphs divide the logits by
their temperature before the softmax.

python -m training.calibrate --data-dir ../shared/data --model-dir models --plot docs/calibration.png
python -m training.calibrate --data-dir ../shared/data --model-dir models --models digit_rnn \
    --method gap-temperature --from-version 1 --fit-images 60000

For each model an uncalibrated version (the newest, or --from-version) is read and the next version is
written beside the newest: model.onnx with the scaling between the head and the Softmax, model.pt wrapping
the committed TorchScript module, and metadata.json with the method, its parameters and the calibration
measured on the MNIST test set. The `logits` output is the scaled logits, `probabilities` their softmax;
all logits of an input are divided by one positive number, which keeps every argmax. The scaling is fitted
on training images; the test set only reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from service.repository import newest_version, read_metadata
from training.common import repository_arguments, setup_logging
from training.data import DRY_RUN_TEST_IMAGES, DataNotFoundError, load_mnist, load_test_set
from training.export import (
    ONNX_FILE,
    TORCHSCRIPT_FILE,
    check_parity,
    next_version,
    onnx_session,
    write_metadata,
)
from training.loop import chunks
from training.networks import IMAGE_SIZE
from training.temperature_scaling import (
    METHODS,
    Scaling,
    apply,
    fit_scaling,
    negative_log_likelihood,
    scaled_onnx,
    scaled_torchscript,
)

logger = logging.getLogger(__name__)

DIGIT_MODELS = ("digit_lstm", "digit_gru", "digit_rnn")
ECE_BINS = 15
ECE_TARGET = 0.01
FIT_IMAGES = 10_000
DRY_RUN_FIT_IMAGES = 512
MNIST_TRAIN_IMAGES = 60_000
BATCH = 1_000


@dataclass(frozen=True)
class Reliability:
    """Equal-width confidence bins over (0, 1]: how many predictions fall in each, their mean confidence
    and the share of them that are right (NaN where a bin is empty)."""

    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: the |accuracy − confidence| gap of each bin, weighted by its count."""
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((gaps * self.counts[filled]).sum() / self.counts.sum())


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> Reliability:
    """The reliability of the top-1 `probabilities` (n, classes) against `labels` (n,), in `bins` bins;
    bin b holds the confidences in (b/bins, (b+1)/bins]."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, minlength=bins) / counts
        accuracy = np.bincount(index, correct, minlength=bins) / counts
    return Reliability(counts, mean_confidence, accuracy)


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the top-1 `probabilities` against `labels` over `bins` equal-width confidence bins."""
    return reliability(probabilities, labels, bins).ece


def fit_indices(count: int, seed: int) -> np.ndarray:
    """The MNIST training images the scaling is fitted on: `count` of the 60,000, drawn without replacement
    by numpy.random.default_rng(seed), in ascending order."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(MNIST_TRAIN_IMAGES, size=count, replace=False))


def onnx_scores(path: Path, images: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray]:
    """The `logits` and `probabilities` of a digit model's ONNX graph for uint8 `images`, in batches."""
    session = onnx_session(path)
    pixels = images.astype(np.float32)
    parts = list(chunks(len(images), BATCH))
    outputs = [
        session.run(["logits", "probabilities"], {"pixels": pixels[part]})
        for part in tqdm(parts, desc=label, unit="batch", mininterval=2.0, disable=len(parts) < 3)
    ]
    return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])


@dataclass(frozen=True)
class Measured:
    """A model version on the test images."""

    logits: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    def reliability(self) -> Reliability:
        return reliability(self.probabilities, self.labels)

    def summary(self) -> dict[str, float]:
        return {
            "accuracy": float((self.predictions == self.labels).mean()),
            "ece": expected_calibration_error(self.probabilities, self.labels),
            "nll": negative_log_likelihood(self.logits, self.labels),
            "mean_confidence": float(self.probabilities.max(axis=1).mean()),
        }


@dataclass(frozen=True)
class MnistSplits:
    fit_images: np.ndarray
    fit_labels: np.ndarray
    fit_seed: int
    test_images: np.ndarray
    test_labels: np.ndarray
    dry_run: bool


def load_splits(data_dir: Path, seed: int, dry_run: bool, fit_images: int = FIT_IMAGES) -> MnistSplits:
    """The seeded slice of `fit_images` of MNIST's training images the scaling is fitted on, and the test
    images it is reported on (a dry run: 512 and the first 1,000)."""
    if not 0 < fit_images <= MNIST_TRAIN_IMAGES:
        raise SystemExit(f"--fit-images {fit_images}: give a number from 1 to {MNIST_TRAIN_IMAGES}")
    test = load_test_set(data_dir, dry_run)
    try:
        train_images, train_labels = load_mnist(data_dir, train=True)
    except DataNotFoundError as error:
        raise SystemExit(str(error)) from error
    index = fit_indices(DRY_RUN_FIT_IMAGES if dry_run else fit_images, seed)
    return MnistSplits(
        train_images.numpy()[index], train_labels.numpy()[index], seed, test.images, test.labels, dry_run
    )


def fitted_on(splits: MnistSplits) -> str:
    count = len(splits.fit_labels)
    if count == MNIST_TRAIN_IMAGES:
        return (
            f"all {MNIST_TRAIN_IMAGES:,} MNIST training images (torchvision's training set). The network was "
            "trained on them (augmented), so they are not unseen; the test set is not used"
        )
    return (
        f"{count} MNIST training images: indices numpy.random.default_rng({splits.fit_seed})"
        f".choice({MNIST_TRAIN_IMAGES}, size={count}, replace=False) into torchvision's training set. The "
        "network was trained on all 60,000 (augmented), so they are not unseen; the test set is not used"
    )


@dataclass(frozen=True)
class Calibrated:
    """What calibrating one model version did: its scaling, the NLL on the images it was fitted on, the
    old and the new version (their names, and each on the test images), and the new files' parity."""

    scaling: Scaling
    fit_nll: tuple[float, float]
    versions: tuple[str, str]
    before: Measured
    after: Measured
    parity: float


def calibrated_metadata(
    old: dict[str, Any], version: str, calibrated: Calibrated, splits: MnistSplits
) -> dict[str, Any]:
    """metadata.json of the calibrated version: the old one's interface, config and training, the
    scaling's method and parameters, and the calibration before and after on the test images."""
    kept_out = ("files", "libraries", "command", "created", "onnx_file", "torchscript_file", "onnx_opset")
    metadata = {key: value for key, value in old.items() if key not in kept_out}
    scaling = calibrated.scaling
    before, after = calibrated.before.summary(), calibrated.after.summary()
    # Task, tensors, config and preprocessing stay as they were: the `logits` output is now the scaled
    # logits, still unnormalised class scores whose softmax is `probabilities`.
    metadata |= {
        "version": version,
        "description": f"{old['description']}; {scaling.description}",
        "calibrated_from": {"version": old["version"], "files": old["files"]},
    }
    metadata["calibration"] = {
        "method": scaling.method,
        **scaling.parameters(),
        "fitted_on": fitted_on(splits),
        "fit_images": len(splits.fit_labels),
        "fit_nll_before": calibrated.fit_nll[0],
        "fit_nll_after": calibrated.fit_nll[1],
        "measured_on": f"the first {len(splits.test_labels):,} MNIST test images (of 10,000)",
        "ece_bins": ECE_BINS,
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "nll_before": before["nll"],
        "nll_after": after["nll"],
        "mean_confidence_before": before["mean_confidence"],
        "mean_confidence_after": after["mean_confidence"],
        "dry_run": splits.dry_run,
    }
    metadata["metrics"] = old["metrics"] | {
        "test_accuracy_onnx": after["accuracy"],
        "test_images": len(splits.test_labels),
        "test_ece": after["ece"],
        "test_nll": after["nll"],
        "test_mean_confidence": after["mean_confidence"],
        "parity_max_relative_difference": calibrated.parity,
    }
    return metadata


def uncalibrated_source(
    model_dir: Path, name: str, out: Path, version: str | None = None
) -> tuple[Path, Path]:
    """Version `version` of `name` (None: the newest) and the folder its calibrated successor goes to,
    `out/<name>/<newest + 1>`."""
    source = newest_version(model_dir, name) if version is None else model_dir / name / version
    if not (source / "metadata.json").is_file():
        raise SystemExit(f"{source}: holds no metadata.json; name a version of {name} that exists")
    metadata = read_metadata(source)
    if metadata.get("task") != "digit-classification":
        raise SystemExit(
            f"{source}: is a {metadata.get('task')!r} model; only digit classifiers are calibrated here: "
            f"name them with --models (default {','.join(DIGIT_MODELS)})"
        )
    calibration = metadata.get("calibration")
    if calibration is not None:
        raise SystemExit(
            f"{source}: is already calibrated ({calibration.get('method')}); leave {name} out with --models, "
            "or name the uncalibrated version it was made from with --from-version"
        )
    target = out / name / next_version(model_dir / name)
    if target.exists():
        raise SystemExit(f"{target}: already exists; remove it, or write elsewhere with --out")
    return source, target


def write_scaled(source: Path, target: Path, scaling: Scaling, splits: MnistSplits) -> float:
    """Write model.onnx and model.pt of `source` with the scaling folded in, into `target`; their largest
    difference from the eager wrapper on random and real images (check_parity raises above 1e-5)."""
    scaled_onnx(source / ONNX_FILE, target / ONNX_FILE, scaling)
    eager = scaled_torchscript(source / TORCHSCRIPT_FILE, target / TORCHSCRIPT_FILE, scaling)
    generator = torch.Generator().manual_seed(splits.fit_seed)
    cases = [(torch.rand(b, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 255,) for b in (1, 37)]
    cases.append((torch.from_numpy(splits.test_images[:200].astype(np.float32)),))
    return check_parity(target, eager, cases)


def calibrate_model(
    name: str,
    model_dir: Path,
    out: Path,
    splits: MnistSplits,
    argv: list[str],
    method: str = "temperature",
    version: str | None = None,
) -> Calibrated:
    """Fit `method` for version `version` of `name` (None: the newest), write the next version under `out`
    and check that it predicts what the old one does; the old and new versions measured on the test
    images."""
    source, target = uncalibrated_source(model_dir, name, out, version)
    fit_logits, _ = onnx_scores(source / ONNX_FILE, splits.fit_images, f"{name} v{source.name} fit images")
    scaling = fit_scaling(method, fit_logits, splits.fit_labels)
    logger.info(
        "%s: %s %s fitted on %d training images", name, scaling.method, scaling.parameters(), len(fit_logits)
    )
    parity = write_scaled(source, target, scaling, splits)
    old, new = (f"{name} v{folder.name} test" for folder in (source, target))
    before = Measured(*onnx_scores(source / ONNX_FILE, splits.test_images, old), splits.test_labels)
    after = Measured(*onnx_scores(target / ONNX_FILE, splits.test_images, new), splits.test_labels)
    changed = int((after.predictions != before.predictions).sum())
    if changed:
        raise AssertionError(f"{target}: {changed} test predictions differ from version {source.name}'s")
    fit_nll = (
        negative_log_likelihood(fit_logits, splits.fit_labels),
        negative_log_likelihood(apply(scaling, fit_logits), splits.fit_labels),
    )
    calibrated = Calibrated(scaling, fit_nll, (source.name, target.name), before, after, parity)
    metadata = calibrated_metadata(read_metadata(source), target.name, calibrated, splits)
    write_metadata(target, metadata, "training.calibrate", argv)
    was, now = before.summary(), after.summary()
    logger.info(
        "%s v%s -> v%s: test ECE %.4f -> %.4f, NLL %.4f -> %.4f, accuracy %.4f (unchanged)",
        name, source.name, target.name, was["ece"], now["ece"], was["nll"], now["nll"], now["accuracy"],
    )  # fmt: skip
    if now["ece"] > ECE_TARGET:
        logger.warning("%s v%s: test ECE %.4f is above %.2f", name, target.name, now["ece"], ECE_TARGET)
    return calibrated


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Fit a scaling of each digit model's logits and write it as the model's next version."
    )
    repository_arguments(parser, DIGIT_MODELS)
    parser.add_argument(
        "--method",
        choices=list(METHODS),
        default="temperature",
        help="temperature: one T per model; gap-temperature: T = exp(a + b * gap between the two largest "
        "logits), per input (default temperature)",
    )
    parser.add_argument(
        "--from-version",
        help="the uncalibrated version to calibrate (default: the newest, which must be one)",
    )
    parser.add_argument(
        "--fit-images",
        type=int,
        default=FIT_IMAGES,
        help=f"how many of the {MNIST_TRAIN_IMAGES} training images to fit on (default {FIT_IMAGES})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the training images fitted on")
    parser.add_argument(
        "--out",
        type=Path,
        help="where the new versions go (default: --model-dir; a dry run: a temporary folder, then removed)",
    )
    parser.add_argument("--plot", type=Path, help="write a reliability diagram (PNG) of every model here")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"fit on {DRY_RUN_FIT_IMAGES} images, report on {DRY_RUN_TEST_IMAGES}",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.dry_run and args.out is None:
        with tempfile.TemporaryDirectory(prefix="calibrate-") as scratch:
            calibrate_all(args, argv, Path(scratch))
    else:
        calibrate_all(args, argv, args.out or args.model_dir)


def calibrate_all(args: argparse.Namespace, argv: list[str], out: Path) -> None:
    """Calibrate every model named in `args`, writing the new versions under `out`."""
    if args.dry_run and out.resolve().is_relative_to(args.model_dir.resolve()):
        raise SystemExit("--dry-run writes nothing into --model-dir: give --out a folder outside it, or none")
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    splits = load_splits(args.data_dir, args.seed, args.dry_run, args.fit_images)
    results = {
        name: calibrate_model(name, args.model_dir, out, splits, argv, args.method, args.from_version)
        for name in names
    }
    if args.plot:
        from training.calibration_plot import reliability_diagram

        panels = {
            name: tuple(
                zip(done.versions, (done.before.reliability(), done.after.reliability()), strict=True)
            )
            for name, done in results.items()
        }
        reliability_diagram(args.plot, panels)
    summary = {
        name: {"before": done.before.summary(), "after": done.after.summary()}
        for name, done in results.items()
    }
    logger.info("new versions under %s:\n%s", out, json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
