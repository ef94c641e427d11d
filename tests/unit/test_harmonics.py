"""The in-graph sinusoid fits' waves (`training.harmonics`), built by angle addition, against cos and sin
evaluated at every step."""

from __future__ import annotations

import math

import numpy as np
import torch

from training import harmonics


def test_waves_by_angle_addition_are_cos_and_sin_at_every_step() -> None:
    steps = harmonics.relative_steps(1024, torch.zeros(1, dtype=torch.float64))
    frequency = torch.tensor([[1 / 1024, 0.0831, 1 / 12, 0.4]], dtype=torch.float64)  # (batch, K)
    angle = 2 * math.pi * frequency[:, None, :]
    cos, sin = harmonics._waves(angle, steps)
    expected = angle * steps[None, :, None]
    np.testing.assert_allclose(cos.numpy(), torch.cos(expected).numpy(), atol=1e-12)
    np.testing.assert_allclose(sin.numpy(), torch.sin(expected).numpy(), atol=1e-12)
