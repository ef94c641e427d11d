"""Series preparation and interval arithmetic shared by training, evaluation and serving.

The forecaster graph takes `series` and `mask` of shape (batch, time), time a multiple of the model's
`patch_size`, with each series right-aligned and zero-padded on the left (mask 0 where padded). Its
first recurrent layer has no bias, so zero padding leaves its state exactly zero: a series gives the
same forecast alone or padded beside longer ones. This module is the one place that builds such
batches; it uses numpy only, so the service needs no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np


def recent_window(series: np.ndarray, context_length: int) -> np.ndarray:
    """The most recent `context_length` values of a 1-D series, as float32: all the model looks at."""
    return np.ascontiguousarray(series[-context_length:], dtype=np.float32)


def pad_left(windows: Sequence[np.ndarray], patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack 1-D windows right-aligned into (values, mask), zero-padded on the left.

    The common length is the longest window rounded up to a multiple of `patch_size`. A missing value
    (NaN) is masked like padding: value 0, mask 0.
    """
    if not windows:
        raise ValueError("pad_left needs at least one series")
    longest = max(len(w) for w in windows)
    length = -(-longest // patch_size) * patch_size
    values = np.zeros((len(windows), length), dtype=np.float32)
    mask = np.zeros((len(windows), length), dtype=np.float32)
    for row, window in enumerate(windows):
        if len(window):
            values[row, -len(window) :] = window
            mask[row, -len(window) :] = 1.0
    missing = np.isnan(values)
    if missing.any():
        values[missing] = 0.0
        mask[missing] = 0.0
    return values, mask


def normal_quantile(level: float) -> float:
    """The z such that mean ± z·std covers `level` percent of a Gaussian (central interval)."""
    if not 0.0 < level < 100.0:
        raise ValueError(f"an interval level is a percentage strictly between 0 and 100, got {level}")
    return NormalDist().inv_cdf(0.5 + level / 200.0)


def quantile(mean: np.ndarray, std: np.ndarray, q: float) -> np.ndarray:
    """The `q` quantile (0 < q < 1) of each step's Gaussian forecast."""
    return mean + NormalDist().inv_cdf(q) * std


def interval(mean: np.ndarray, std: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the central `level` % prediction interval."""
    half_width = normal_quantile(level) * std
    return mean - half_width, mean + half_width
