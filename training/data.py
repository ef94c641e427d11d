"""The data both models learn from: real MNIST, and one seeded family of sine-like series."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)


class DataNotFoundError(RuntimeError):
    """The data set is neither on disk nor downloadable."""


def load_mnist(data_dir: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as (uint8 images N×28×28, int64 labels), through torchvision's own loader.

    Looks for `<data_dir>/MNIST/raw/*-ubyte` and downloads there only when it is missing.
    """
    from torchvision.datasets import MNIST

    try:
        dataset = MNIST(str(data_dir), train=train, download=True)
    except Exception as error:  # torchvision raises URLError, RuntimeError or OSError here
        split = "train" if train else "t10k"
        raise DataNotFoundError(
            f"MNIST is not under {data_dir} and could not be downloaded ({error}). Expected the files "
            f"{data_dir}/MNIST/raw/{split}-images-idx3-ubyte and {split}-labels-idx1-ubyte "
            "(torchvision's layout); point --data-dir at the folder that holds MNIST/"
        ) from error
    return dataset.data, dataset.targets


DRY_RUN_TEST_IMAGES = 1_000


@dataclass(frozen=True)
class MnistTestSet:
    """MNIST test images (uint8 N×28×28) and labels that a command line reports on."""

    images: np.ndarray
    labels: np.ndarray
    dry_run: bool
    """Only the first DRY_RUN_TEST_IMAGES."""


def load_test_set(data_dir: Path, dry_run: bool = False) -> MnistTestSet:
    """The 10,000 MNIST test images (a dry run: the first 1,000); `SystemExit` saying what is missing."""
    try:
        images, labels = load_mnist(data_dir, train=False)
    except DataNotFoundError as error:
        raise SystemExit(str(error)) from error
    tested = slice(DRY_RUN_TEST_IMAGES if dry_run else None)
    return MnistTestSet(images.numpy()[tested], labels.numpy()[tested], dry_run)


# The forecaster's world: y_t = A·sin(2πt/P + φ) + (k·A/P)·t + c + ε, ε ~ N(0, (s·A)²).
AMPLITUDE_RANGE = (0.5, 2.0)
TREND_RANGE = (-2.5, 2.5)
OFFSET_RANGE = (-2.0, 2.0)


@dataclass(frozen=True)
class SeriesFamily:
    """The ranges the sine-with-trend generator draws P (log-uniform, in steps) and s (noise sd as a
    fraction of the amplitude) from; A, φ, k and c are drawn the same way in every family."""

    period_range: tuple[float, float]
    noise_range: tuple[float, float]

    def describe(self) -> str:
        (p_low, p_high), (s_low, s_high) = self.period_range, self.noise_range
        return f"P log-uniform in [{p_low:g}, {p_high:g}], s ∈ U[{s_low:g}, {s_high:g}]"


V1_FAMILY = SeriesFamily(period_range=(16.0, 64.0), noise_range=(0.0, 0.1))
V2_FAMILY = SeriesFamily(period_range=(4.0, 256.0), noise_range=(0.0, 0.2))
PERIOD_RANGE = V1_FAMILY.period_range
NOISE_RANGE = V1_FAMILY.noise_range


@dataclass(frozen=True)
class SeriesBatch:
    """`values` of shape (n, length) and the parameters that made each row."""

    values: np.ndarray
    period: np.ndarray
    amplitude: np.ndarray
    noise_sd: np.ndarray


def sine_series(
    rng: np.random.Generator, count: int, length: int, family: SeriesFamily = V1_FAMILY
) -> SeriesBatch:
    """`count` series of `length` steps from the sine-with-trend `family`, drawn from `rng`."""
    low, high = family.period_range
    period = np.exp(rng.uniform(np.log(low), np.log(high), count))
    amplitude = rng.uniform(*AMPLITUDE_RANGE, count)
    phase = rng.uniform(0.0, 2.0 * np.pi, count)
    trend = rng.uniform(*TREND_RANGE, count)
    offset = rng.uniform(*OFFSET_RANGE, count)
    noise = rng.uniform(*family.noise_range, count)
    t = np.arange(length, dtype=np.float64)[None, :]
    values = (
        amplitude[:, None] * np.sin(2.0 * np.pi * t / period[:, None] + phase[:, None])
        + (trend * amplitude / period)[:, None] * t
        + offset[:, None]
        + (noise * amplitude)[:, None] * rng.standard_normal((count, length))
    )
    return SeriesBatch(values.astype(np.float32), period, amplitude, noise * amplitude)


def unseen_series(rng: np.random.Generator, count: int, length: int) -> SeriesBatch:
    """Series no sine model has seen: the first half Gaussian random walks (step sd U[0.05, 0.5],
    start U[-2, 2]; `period` 1, the naive forecast's season), the second half square waves (P
    log-uniform in [8, 128], amplitude U[0.5, 2], noise sd U[0, 0.1]·A)."""
    walks = count // 2
    squares = count - walks
    step_sd = rng.uniform(0.05, 0.5, walks)
    start = rng.uniform(-2.0, 2.0, walks)
    walk = start[:, None] + np.cumsum(step_sd[:, None] * rng.standard_normal((walks, length)), axis=1)
    period = np.exp(rng.uniform(np.log(8.0), np.log(128.0), squares))
    amplitude = rng.uniform(*AMPLITUDE_RANGE, squares)
    phase = rng.uniform(0.0, 1.0, squares)
    offset = rng.uniform(*OFFSET_RANGE, squares)
    noise = rng.uniform(0.0, 0.1, squares) * amplitude
    t = np.arange(length, dtype=np.float64)[None, :]
    square = (
        amplitude[:, None] * np.where((t / period[:, None] + phase[:, None]) % 1.0 < 0.5, 1.0, -1.0)
        + offset[:, None]
        + noise[:, None] * rng.standard_normal((squares, length))
    )
    return SeriesBatch(
        np.concatenate([walk, square]).astype(np.float32),
        np.concatenate([np.ones(walks), period]),
        np.concatenate([step_sd, amplitude]),
        np.concatenate([step_sd, noise]),
    )


def seed_curve(points: int = 100, horizon: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The classic example's curve y = sin(3x) + x on linspace(-3, 3, points): history and the next
    `horizon` points of the same grid."""
    step = 6.0 / (points - 1)
    x = -3.0 + step * np.arange(points + horizon)
    y = (np.sin(3.0 * x) + x).astype(np.float32)
    return y[:points], y[points:]
