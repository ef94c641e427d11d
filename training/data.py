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


# The forecaster's world: y_t = A·sin(2πt/P + φ) + (k·A/P)·t + c + ε, ε ~ N(0, (s·A)²).
PERIOD_RANGE = (16.0, 64.0)  # log-uniform, in steps
AMPLITUDE_RANGE = (0.5, 2.0)
TREND_RANGE = (-2.5, 2.5)
OFFSET_RANGE = (-2.0, 2.0)
NOISE_RANGE = (0.0, 0.1)  # noise sd as a fraction of the amplitude


@dataclass(frozen=True)
class SeriesBatch:
    """`values` of shape (n, length) and the parameters that made each row."""

    values: np.ndarray
    period: np.ndarray
    amplitude: np.ndarray
    noise_sd: np.ndarray


def sine_series(rng: np.random.Generator, count: int, length: int) -> SeriesBatch:
    """`count` series of `length` steps from the sine-with-trend family, drawn from `rng`."""
    period = np.exp(rng.uniform(np.log(PERIOD_RANGE[0]), np.log(PERIOD_RANGE[1]), count))
    amplitude = rng.uniform(*AMPLITUDE_RANGE, count)
    phase = rng.uniform(0.0, 2.0 * np.pi, count)
    trend = rng.uniform(*TREND_RANGE, count)
    offset = rng.uniform(*OFFSET_RANGE, count)
    noise = rng.uniform(*NOISE_RANGE, count)
    t = np.arange(length, dtype=np.float64)[None, :]
    values = (
        amplitude[:, None] * np.sin(2.0 * np.pi * t / period[:, None] + phase[:, None])
        + (trend * amplitude / period)[:, None] * t
        + offset[:, None]
        + (noise * amplitude)[:, None] * rng.standard_normal((count, length))
    )
    return SeriesBatch(values.astype(np.float32), period, amplitude, noise * amplitude)


def seed_curve(points: int = 100, horizon: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The classic example's curve y = sin(3x) + x on linspace(-3, 3, points): history and the next
    `horizon` points of the same grid."""
    step = 6.0 / (points - 1)
    x = -3.0 + step * np.arange(points + horizon)
    y = (np.sin(3.0 * x) + x).astype(np.float32)
    return y[:points], y[points:]
