"""The in-graph sinusoid fits' waves (`training.harmonics`), built by angle addition, against cos and sin
evaluated at every step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training import harmonics


@pytest.mark.parametrize("length", [1024, 200, 17, 5])
def test_waves_by_angle_addition_are_cos_and_sin_at_every_step(length: int) -> None:
    steps = harmonics.relative_steps(length, torch.zeros(1, dtype=torch.float64))
    frequency = torch.tensor([[1 / 1024, 0.0831, 1 / 12, 0.4]], dtype=torch.float64)  # (batch, K)
    angle = 2 * math.pi * frequency[:, None, :]
    cos, sin = harmonics._waves(angle, length)
    expected = angle * steps[None, :, None]
    assert cos.shape == sin.shape == (1, length, 4)
    np.testing.assert_allclose(cos.numpy(), torch.cos(expected).numpy(), atol=1e-12)
    np.testing.assert_allclose(sin.numpy(), torch.sin(expected).numpy(), atol=1e-12)
