"""Classical forecasts of a window, computed as fixed tensor operations that export to ONNX and TorchScript.

`training.candidates` holds the same ideas in numpy, one series at a time; here every row of a batch is
forecast at once, each with its own season length and history length, in fixed shapes: the window is
right-aligned with its mask (1 observed, 0 left padding or a missing value), and every fit sums only
where the window holds values.

- `fill`: missing values inside the window take the last value before them (a log-depth forward fill).
- `detect_season`: the lag (4 to 128) where the differenced window's autocorrelation peaks, if it
  reaches 0.3, cut to the shortest whole fraction of it that echoes it (within 10 %); else 1.
- `seasonal_indices`: classical decomposition's indices, per phase counted back from the newest value:
  a centred moving average of length m (2×m when m is even) through cumulative sums, the detrended
  values averaged over the latest `INDEX_CYCLES` seasons.
- `smoothing`: simple exponential smoothing and damped Holt on a grid of constants, each grid point a
  linear recurrence s_t = M·s_{t-1} + c·y_t run as a Hillis–Steele scan (log₂ W rounds of shift, matrix
  power and add); the grid point with the smallest in-sample one-step squared error wins; theta is the
  SES forecast plus half the window's least-squares slope.
- `Classical`: naive, seasonal naive, drift, SES, damped Holt and theta (the last three on the
  seasonally adjusted window, the indices added back), over `horizon` steps.

Everything here is linear in the window's values once the season and the grid points are chosen, and
those choices do not change when the window is scaled or shifted; so a·y + b is forecast as a·ŷ + b.
"""

from __future__ import annotations

import math

import torch

SES_ALPHAS = (0.1, 0.3, 0.5, 1.0)
HOLT_ALPHAS = (0.2, 0.5, 0.9)
HOLT_BETAS = (0.02, 0.1, 0.3)
HOLT_PHIS = (0.9, 0.98)
INDEX_CYCLES = 6
MIN_PERIOD = 4
MAX_PERIOD = 128
MIN_AUTOCORRELATION = 0.3
CANDIDATES = ("naive", "seasonal_naive", "drift", "ses", "holt_damped", "theta")


def smoothing_grid() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alpha, beta, phi) per grid point: the SES points (beta = phi = 0) first, then damped Holt's."""
    ses = [(a, 0.0, 0.0) for a in SES_ALPHAS]
    holt = [(a, b, p) for a in HOLT_ALPHAS for b in HOLT_BETAS for p in HOLT_PHIS]
    alpha, beta, phi = torch.tensor(ses + holt, dtype=torch.float64).T
    return alpha, beta, phi


def recurrence(
    alpha: torch.Tensor, beta: torch.Tensor, phi: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each grid point's transition M (G, 2, 2) and input weight c (G, 2), state (level, slope):

    level_t = (1-α)(level + φ·slope) + α·y_t
    slope_t = -αβ·level + φ(1-αβ)·slope + αβ·y_t
    """
    ab = alpha * beta
    transition = torch.stack(
        [torch.stack([1 - alpha, (1 - alpha) * phi], dim=-1), torch.stack([-ab, phi * (1 - ab)], dim=-1)],
        dim=-2,
    )
    return transition, torch.stack([alpha, ab], dim=-1)


def scan_powers(transition: torch.Tensor, length: int) -> torch.Tensor:
    """M^(2^r) for the scan's rounds r = 0 … ⌈log₂ length⌉ - 1: (rounds, G, 2, 2)."""
    powers, power = [], transition
    for _ in range(max(1, math.ceil(math.log2(length)))):
        powers.append(power)
        power = power @ power
    return torch.stack(powers)


def damping(phi: torch.Tensor, horizon: int) -> torch.Tensor:
    """φ + φ² + … + φ^j for j = 1 … horizon: (G, horizon)."""
    steps = torch.arange(1, horizon + 1, dtype=phi.dtype)
    return torch.cumsum(phi[:, None] ** steps[None, :], dim=1)


def shift_right(values: torch.Tensor, by: int) -> torch.Tensor:
    """`values` (…, W) moved `by` places toward the end, zeros coming in at the start."""
    return torch.cat([torch.zeros_like(values[..., :by]), values[..., :-by]], dim=-1)


def fill(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Missing values inside the window carried forward from the last value before them; and the span
    mask: 1 from the first observed value to the end."""
    known = mask > 0
    filled = values * mask
    step = 1
    while step < values.shape[-1]:
        earlier, earlier_known = shift_right(filled, step), shift_right(known.to(values.dtype), step) > 0
        filled = torch.where(known, filled, earlier)
        known = known | earlier_known
        step *= 2
    return filled, known.to(values.dtype)


def gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[row, index[row, …]] with index clamped into the row: (B, W) by (B, …) -> (B, …)."""
    width = values.shape[1]
    flat = index.clamp(0, width - 1).reshape(index.shape[0], -1)
    return torch.gather(values, 1, flat).reshape(index.shape)


def detect_season(
    values: torch.Tensor,
    span: torch.Tensor,
    count: torch.Tensor,
    min_period: int = MIN_PERIOD,
    max_period: int = MAX_PERIOD,
    min_autocorrelation: float = MIN_AUTOCORRELATION,
) -> torch.Tensor:
    """The season length of each row (float, (B, 1)): see the module's text."""
    width = values.shape[1]
    both = span[:, 1:] * span[:, :-1]
    diffs = (values[:, 1:] - values[:, :-1]) * both
    pairs = both.sum(dim=1, keepdim=True).clamp_min(1.0)
    centred = (diffs - diffs.sum(dim=1, keepdim=True) / pairs) * both
    lags = torch.arange(0, max_period + 1, device=values.device)
    position = torch.arange(width - 1, device=values.device)
    earlier = position[None, :] - lags[:, None]  # (lags, W-1)
    lagged = centred[:, earlier.clamp_min(0)] * (earlier >= 0).to(values.dtype)  # (B, lags, W-1)
    acf = (lagged * centred[:, None, :]).sum(dim=2)
    acf = acf / acf[:, :1].clamp_min(1e-30)
    top = torch.clamp(torch.floor(count / 2), max=float(max_period))
    lag_values = lags.to(values.dtype)[None, :]
    allowed = (lag_values >= min_period) & (lag_values <= top)
    masked = torch.where(allowed, acf, torch.full_like(acf, -2.0))
    peak, peak_lag = masked.max(dim=1, keepdim=True)
    period = peak_lag.to(values.dtype)
    divisors = torch.arange(2, max_period // min_period + 1, dtype=values.dtype, device=values.device)
    shorter = torch.round(period / divisors[None, :])  # (B, divisors)
    echoes = torch.gather(acf, 1, shorter.long().clamp(0, max_period)) >= 0.9 * peak
    usable = echoes & (shorter >= min_period) & (divisors[None, :] <= torch.floor(period / min_period))
    # The largest usable divisor gives the shortest echo; without one, the peak's own lag.
    best = torch.where(usable, divisors[None, :], torch.zeros_like(shorter)).max(dim=1, keepdim=True).values
    echo = torch.round(period / best.clamp_min(1.0))
    season = torch.where(best > 0, echo, period)
    flat = (diffs.abs().sum(dim=1, keepdim=True) == 0) | (top < min_period)
    return torch.where((peak >= min_autocorrelation) & ~flat, season, torch.ones_like(season))


def window_sum(cumulative: torch.Tensor, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """The sum of a row's values low+1 … high, from its cumulative sums (a zero in front)."""
    return gather_rows(cumulative, high + 1) - gather_rows(cumulative, low + 1)


def seasonal_indices(
    values: torch.Tensor,
    span: torch.Tensor,
    season: torch.Tensor,
    max_period: int = MAX_PERIOD,
    index_cycles: int = INDEX_CYCLES,
) -> torch.Tensor:
    """Additive indices by phase (0 = the newest value's phase, p = p steps before it): (B, max_period),
    zero past each row's season and for rows whose window holds fewer than two seasons (or m = 1)."""
    width = values.shape[1]
    device, dtype = values.device, values.dtype
    m = season.long()  # (B, 1)
    half = m // 2
    even = (m % 2 == 0).long()
    cumulative = torch.cat([torch.zeros_like(values[:, :1]), torch.cumsum(values * span, dim=1)], dim=1)
    t = torch.arange(width, device=device)[None, :]

    total = window_sum(cumulative, t + half - even, t - half - 1 + even) + window_sum(
        cumulative, t + half, t - half - 1
    )
    trend = total / (2 * m).to(dtype)
    first = width - span.sum(dim=1, keepdim=True).long()
    valid = (t - half >= first) & (t + half <= width - 1)
    detrended = torch.where(valid, values - trend, torch.zeros_like(values))
    # Phase p's positions: width-1-p-k·m for k = 0 … index_cycles (the newest half season has no trend).
    phases = torch.arange(max_period, device=device)[None, :, None]
    cycles = torch.arange(index_cycles + 1, device=device)[None, None, :]
    positions = (width - 1) - phases - cycles * m[:, :, None]  # (B, P, K)
    last_valid = width - 1 - half[:, :, None]
    keep = (positions >= first[:, :, None] + half[:, :, None]) & (positions <= last_valid)
    keep = keep & (positions > last_valid - index_cycles * m[:, :, None]) & (phases < m[:, :, None])
    picked = gather_rows(detrended, positions) * keep.to(dtype)
    index = picked.sum(dim=2) / keep.sum(dim=2).clamp_min(1).to(dtype)  # (B, P)
    in_season = (phases[:, :, 0] < m).to(dtype)
    index = (index - (index * in_season).sum(dim=1, keepdim=True) / m.to(dtype)) * in_season
    enough = (span.sum(dim=1, keepdim=True) >= 2 * m) & (m > 1)
    return index * enough.to(dtype)


def phase_of(width: int, horizon: int, season: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Phases (counted back from the newest value) of the window's positions (B, W) and of the next
    `horizon` steps (B, horizon), for each row's season."""
    m = season.long().clamp_min(1)
    back = torch.arange(width - 1, -1, -1, device=season.device)[None, :]
    ahead = torch.arange(1, horizon + 1, device=season.device)[None, :]
    return back % m, (-ahead) % m


class Classical(torch.nn.Module):
    """The candidates' forecasts (`forward`), with SES, damped Holt and theta (`smooth`) on a fixed grid of
    smoothing constants (see the module's text)."""

    def __init__(self, width: int, horizon: int) -> None:
        super().__init__()
        alpha, beta, phi = smoothing_grid()
        transition, gain = recurrence(alpha, beta, phi)
        self.register_buffer("powers", scan_powers(transition, width).float())
        self.register_buffer("gain", gain.float())
        self.register_buffer("damping", damping(phi, horizon).float())
        self.register_buffer("phi", phi.float())
        self.register_buffer("alpha", alpha.float())
        self.register_buffer("is_ses", beta == 0)
        self.powers: torch.Tensor
        self.gain: torch.Tensor
        self.damping: torch.Tensor
        self.phi: torch.Tensor
        self.alpha: torch.Tensor
        self.is_ses: torch.Tensor

    def smooth(self, values: torch.Tensor, span: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Paths (B, 3, horizon) of SES, damped Holt and theta for windows that start at zero (the first
        value of the span subtracted) and are zero before their span; `observed` masks the values that
        count in the one-step errors."""
        y = values[:, None, :]  # (B, 1, W)
        level = self.gain[None, :, 0, None] * y  # (B, G, W)
        slope = self.gain[None, :, 1, None] * y
        step = 1
        for round_ in range(self.powers.shape[0]):
            if step >= values.shape[1]:
                break
            power = self.powers[round_][None, :, :, :, None]  # (1, G, 2, 2, 1)
            earlier_level, earlier_slope = shift_right(level, step), shift_right(slope, step)
            level = level + power[:, :, 0, 0] * earlier_level + power[:, :, 0, 1] * earlier_slope
            slope = slope + power[:, :, 1, 0] * earlier_level + power[:, :, 1, 1] * earlier_slope
            step *= 2
        predicted = shift_right(level + self.phi[None, :, None] * slope, 1)
        counted = observed * shift_right(span, 1)
        errors = (y - predicted) * counted[:, None, :]
        sse = (errors * errors).sum(dim=2)  # (B, G)
        big = torch.full_like(sse, 3.0e38)
        best_ses = torch.where(self.is_ses[None, :], sse, big).argmin(dim=1, keepdim=True)
        best_holt = torch.where(self.is_ses[None, :], big, sse).argmin(dim=1, keepdim=True)
        paths = level[:, :, -1:] + self.damping[None, :, :] * slope[:, :, -1:]  # (B, G, H)
        horizon = paths.shape[2]
        ses = torch.gather(paths, 1, best_ses[:, :, None].expand(-1, 1, horizon))[:, 0]
        holt = torch.gather(paths, 1, best_holt[:, :, None].expand(-1, 1, horizon))[:, 0]
        # Theta: SES plus half the least-squares slope, with SES's own correction for its lag.
        a = torch.gather(self.alpha[None, :].expand(values.shape[0], -1), 1, best_ses)
        count = span.sum(dim=1, keepdim=True)
        t = torch.arange(values.shape[1], dtype=values.dtype, device=values.device)[None, :]
        t_mean = (t * span).sum(dim=1, keepdim=True) / count
        y_mean = (values * span).sum(dim=1, keepdim=True) / count
        centred_t = (t - t_mean) * span
        ols = (centred_t * (values - y_mean)).sum(dim=1, keepdim=True) / (centred_t * centred_t).sum(
            dim=1, keepdim=True
        ).clamp_min(1e-12)
        ahead = torch.arange(1, horizon + 1, dtype=values.dtype, device=values.device)[None, :]
        theta = ses + ols / 2.0 * (ahead - 1 + 1 / a - (1 - a) ** count / a)
        return torch.stack([ses, holt, theta], dim=1)

    def forward(
        self, values: torch.Tensor, span: torch.Tensor, observed: torch.Tensor, season: torch.Tensor
    ) -> torch.Tensor:
        """Every candidate's forecast (B, len(CANDIDATES), horizon) of windows `values` (filled, zero before
        the span) with season lengths `season` (B, 1)."""
        width = values.shape[1]
        horizon = self.damping.shape[1]
        count = span.sum(dim=1, keepdim=True)
        m = torch.where(count >= 2 * season, season, torch.ones_like(season))
        last = values[:, -1:]
        ahead = torch.arange(1, horizon + 1, dtype=values.dtype, device=values.device)[None, :]
        first = gather_rows(values, width - count.long())
        naive = last.expand(-1, horizon)
        # Seasonal naive: step j repeats the value m - ((j-1) mod m) steps back.
        back = m.long() - (ahead.long() - 1) % m.long()
        seasonal = gather_rows(values, width - back)
        drift = last + ahead * (last - first) / (count - 1).clamp_min(1.0)
        indices = seasonal_indices(values, span, m)
        window_phase, future_phase = phase_of(width, horizon, m)
        adjusted = (values - torch.gather(indices, 1, window_phase.expand(values.shape[0], -1))) * span
        start = gather_rows(adjusted, width - count.long())
        smoothed = self.smooth((adjusted - start) * span, span, observed)
        future_index = torch.gather(indices, 1, future_phase)
        smoothed = smoothed + start[:, :, None] + future_index[:, None, :]
        return torch.cat([torch.stack([naive, seasonal, drift], dim=1), smoothed], dim=1)
