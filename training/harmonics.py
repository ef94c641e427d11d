"""In-graph least-squares fits that the forecasters use to normalise a window: a straight line, and
one sinusoid on top of it whose frequency is the peak of the window's periodogram.

Every function takes the window right-aligned with its `mask` (1 observed, 0 left padding), sums only
where the mask is 1 and measures time from the newest value (0) backwards, so left padding changes
nothing but the order of float additions. All of it exports to ONNX (opset 17) and TorchScript.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class LineFit(NamedTuple):
    """A masked least-squares line y ≈ level + slope·(t − t_mean), its residual and sample count."""

    level: torch.Tensor  # (batch, 1): the fitted value at t_mean
    slope: torch.Tensor  # (batch, 1)
    t_mean: torch.Tensor  # (batch, 1)
    residual: torch.Tensor  # (batch, time), zero where mask is 0
    observed: torch.Tensor  # (batch, 1): how many values the window holds


def relative_steps(length: int, like: torch.Tensor) -> torch.Tensor:
    """Time of each position relative to the newest value: -(length-1), ..., -1, 0."""
    return torch.arange(length, dtype=like.dtype, device=like.device) - (length - 1)


def frequency_grid(context_length: int, shortest_period: float) -> torch.Tensor:
    """The periodogram's frequencies, cycles per step: from one cycle per context to one per
    `shortest_period` steps, four to the context's resolution."""
    return torch.arange(1.0 / context_length, 1.0 / shortest_period, 1.0 / (4 * context_length))


def fine_offsets() -> torch.Tensor:
    """Where `periodogram_peak` looks around its best frequency, in spacings: 17 points in [-1, 1]."""
    return torch.linspace(-1.0, 1.0, 17)


def fit_line(values: torch.Tensor, mask: torch.Tensor, steps: torch.Tensor) -> LineFit:
    """The masked least-squares line through each row of `values` (batch, time)."""
    count = mask.sum(dim=1, keepdim=True)
    t_mean = (mask * steps).sum(dim=1, keepdim=True) / count
    level = (mask * values).sum(dim=1, keepdim=True) / count
    t_centered = (steps - t_mean) * mask
    y_centered = (values - level) * mask
    slope = (t_centered * y_centered).sum(dim=1, keepdim=True) / (t_centered * t_centered).sum(
        dim=1, keepdim=True
    ).clamp_min(1e-12)
    residual = (y_centered - slope * t_centered) * mask
    return LineFit(level, slope, t_mean, residual, count)


class SinusoidFit(NamedTuple):
    """One sinusoid fitted jointly with a line (the line's part already removed from `residual`)."""

    frequency: torch.Tensor  # (batch, 1), cycles per step
    in_window: torch.Tensor  # (batch, time): the fitted sinusoid less its own line part, masked
    future: torch.Tensor  # (batch, horizon): its continuation at steps 1..horizon


class _Basis(NamedTuple):
    """cos and sin at K frequencies per row, with their masked line parts removed: (batch, time, K)."""

    cos: torch.Tensor
    sin: torch.Tensor
    cos_line: tuple[torch.Tensor, torch.Tensor]  # level and slope, (batch, 1, K)
    sin_line: tuple[torch.Tensor, torch.Tensor]


def _peak_index(power: torch.Tensor) -> torch.Tensor:
    return torch.argmax(power, dim=1, keepdim=True)


def _line_removed(
    wave: torch.Tensor, mask: torch.Tensor, t_centered: torch.Tensor, count: torch.Tensor
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """`wave` (batch, time, K) less its masked least-squares line; the line's level and slope."""
    level = (mask * wave).sum(dim=1, keepdim=True) / count
    slope = (t_centered * (wave - level) * mask).sum(dim=1, keepdim=True) / (
        (t_centered * t_centered * mask).sum(dim=1, keepdim=True).clamp_min(1e-12)
    )
    return (wave - level - slope * t_centered) * mask, (level, slope)


WAVE_BLOCK = 16


def _waves(angle: torch.Tensor, length: int, block: int = WAVE_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of `angle` (batch, 1, K) times every one of `relative_steps(length)`: (batch, length,
    K). Counted back from the newest value, step -n is -(block·q + j) with j < block, so by the
    angle-addition formulas only the multiples of `block` and the offsets 0 … block-1 need cos and sin
    evaluated: the same values, up to float rounding, at about a `block`th of the evaluations."""
    blocks = (length + block - 1) // block
    coarse = angle * (-block * torch.arange(blocks, dtype=angle.dtype, device=angle.device))[None, :, None]
    fine = angle * (-torch.arange(block, dtype=angle.dtype, device=angle.device))[None, :, None]
    cos_c, sin_c = torch.cos(coarse)[:, :, None, :], torch.sin(coarse)[:, :, None, :]
    cos_f, sin_f = torch.cos(fine)[:, None, :, :], torch.sin(fine)[:, None, :, :]
    shape = (angle.shape[0], blocks * block, angle.shape[2])
    cos = (cos_c * cos_f - sin_c * sin_f).reshape(shape)[:, :length]  # newest first
    sin = (sin_c * cos_f + cos_c * sin_f).reshape(shape)[:, :length]
    return torch.flip(cos, [1]), torch.flip(sin, [1])


def _basis(frequency: torch.Tensor, mask: torch.Tensor, steps: torch.Tensor, line: LineFit) -> _Basis:
    """The basis at `frequency` (batch, K), all in float64; `steps` are `relative_steps` of the window."""
    angle = 2.0 * math.pi * frequency[:, None, :]  # (batch, 1, K)
    t = steps[None, :, None]
    m = mask[:, :, None]
    t_centered = t - line.t_mean[:, :, None]
    count = line.observed[:, :, None]
    cos_wave, sin_wave = _waves(angle, steps.shape[0])
    cos, cos_line = _line_removed(cos_wave, m, t_centered, count)
    sin, sin_line = _line_removed(sin_wave, m, t_centered, count)
    return _Basis(cos, sin, cos_line, sin_line)


def _solve(
    residual: torch.Tensor, basis: _Basis, ridge: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ridge least squares of `residual` (batch, time) on each frequency's cos and sin: a, b and the
    explained sum of squares, each (batch, K)."""
    r = residual[:, :, None]
    cc = (basis.cos * basis.cos).sum(dim=1) + ridge
    ss = (basis.sin * basis.sin).sum(dim=1) + ridge
    cs = (basis.cos * basis.sin).sum(dim=1)
    rc = (r * basis.cos).sum(dim=1)
    rs = (r * basis.sin).sum(dim=1)
    determinant = (cc * ss - cs * cs).clamp_min(1e-6)
    a = (ss * rc - cs * rs) / determinant
    b = (cc * rs - cs * rc) / determinant
    return a, b, a * rc + b * rs


def _double_line(line: LineFit) -> LineFit:
    return LineFit(
        line.level.double(),
        line.slope.double(),
        line.t_mean.double(),
        line.residual.double(),
        line.observed.double(),
    )


def periodogram_peak(
    residual: torch.Tensor,
    mask: torch.Tensor,
    steps: torch.Tensor,
    line: LineFit,
    grid: torch.Tensor,
    fine_offsets: torch.Tensor,
    refinements: int = 3,
    ridge: float = 0.1,
) -> torch.Tensor:
    """The frequency (batch, 1, float64) at which one sinusoid explains most of `residual`.

    First the periodogram's peak on `grid` (frequencies, ascending), only among periods of at most half
    the window. Then `refinements` times: the sum of squares that a sinusoid fitted jointly with the
    line explains, at `fine_offsets` times a spacing around the best so far, and a parabola through
    its log at the best point and its two neighbours. The first spacing is the window's own
    resolution, 1/n for n values (the line's removal can move a few-cycle peak by a fraction of it);
    each round shrinks it by the offsets' step.
    """
    cos, sin = _waves(2.0 * math.pi * grid[None, None, :], steps.shape[0])
    power = (residual @ cos[0]) ** 2 + (residual @ sin[0]) ** 2
    allowed = grid[None, :] * line.observed >= 2.0
    power = torch.where(allowed, power, torch.full_like(power, -1.0))
    # From here on in float64: the forecast moves by 2π·t·Δf for an error Δf in the frequency, so a
    # float32 rounding of it (or of 2π·f·t at t ~ -1000) would differ between runtimes and paddings.
    best_frequency = grid[_peak_index(power)].reshape(-1, 1).double()
    spacing = 1.0 / line.observed.double()
    lowest = 0.5 * spacing
    offsets = fine_offsets.double()
    step = offsets[1] - offsets[0]
    residual64, mask64, steps64, line64 = residual.double(), mask.double(), steps.double(), _double_line(line)
    last = fine_offsets.shape[0] - 2
    for _ in range(refinements):
        candidates = torch.maximum(best_frequency + spacing * offsets[None, :], lowest).clamp(max=0.5)
        _, _, explained = _solve(residual64, _basis(candidates, mask64, steps64, line64), ridge)
        log_explained = torch.log(explained.clamp_min(0.0) + 1e-30)
        best = _peak_index(explained).clamp(1, last)
        below = torch.gather(log_explained, 1, best - 1)
        at = torch.gather(log_explained, 1, best)
        above = torch.gather(log_explained, 1, best + 1)
        curvature = below - 2.0 * at + above
        bent = curvature < 0
        shift = torch.where(
            bent, 0.5 * (below - above) / torch.where(bent, curvature, -torch.ones_like(at)), 0 * at
        )
        spacing = spacing * step
        best_frequency = torch.gather(candidates, 1, best) + shift.clamp(-1.0, 1.0) * spacing
    return best_frequency


def fit_sinusoid(
    residual: torch.Tensor,
    mask: torch.Tensor,
    steps: torch.Tensor,
    line: LineFit,
    frequency: torch.Tensor,
    horizon: int,
    ridge: float = 0.1,
) -> SinusoidFit:
    """Least-squares a·cos + b·sin at `frequency`, fitted jointly with the window's line.

    By the Frisch–Waugh–Lovell theorem, regressing the line's residual on the cosine and sine with
    their own line parts removed gives the joint fit's a and b; the forecast continues both the
    sinusoid and the correction it makes to the line. `ridge` (in units of the residual's squared
    scale) keeps a sinusoid that the window cannot tell from its line from growing without bound.
    Computed in float64, returned in the input's dtype.
    """
    dtype = residual.dtype
    line64 = _double_line(line)
    frequency = frequency.double()
    basis = _basis(frequency, mask.double(), steps.double(), line64)
    a, b, _ = _solve(residual.double(), basis, ridge)
    in_window = a[:, None, :] * basis.cos + b[:, None, :] * basis.sin
    ahead = torch.arange(1, horizon + 1, dtype=torch.float64, device=residual.device)[None, :]
    ahead_centered = ahead - line64.t_mean
    angle = 2.0 * math.pi * frequency
    (cos_level, cos_slope), (sin_level, sin_slope) = basis.cos_line, basis.sin_line
    cos_f = torch.cos(angle * ahead) - cos_level[:, 0] - cos_slope[:, 0] * ahead_centered
    sin_f = torch.sin(angle * ahead) - sin_level[:, 0] - sin_slope[:, 0] * ahead_centered
    return SinusoidFit(frequency.to(dtype), in_window[:, :, 0].to(dtype), (a * cos_f + b * sin_f).to(dtype))
