"""Classical forecasts of a window, computed as fixed tensor operations that export to ONNX and TorchScript.

`training.candidates` holds the same ideas in numpy, one series at a time; here every row of a batch is
forecast at once, each with its own season length and history length, in fixed shapes: the window is
right-aligned with its mask (1 observed, 0 left padding or a missing value), and every fit sums only
where the window holds values.

- `fill`: missing values inside the window take the last value before them (a log-depth forward fill).
- `SeasonDetector`: the lag (4 to 128) where the differenced window's autocorrelation peaks, if it
  reaches 0.3, cut to the shortest whole fraction of it that echoes it (within 10 %); else 1.
- `seasonal_indices`: classical decomposition's indices, per phase counted back from the newest value:
  a centred moving average of length m (2×m when m is even) through cumulative sums, the detrended
  values averaged over the latest `INDEX_CYCLES` seasons.
- `smoothing`: simple exponential smoothing and Holt's trend (damped, or undamped at φ = 1) on a grid of
  constants, each grid point a linear recurrence s_t = M·s_{t-1} + c·y_t run in blocks of fixed matrix
  products (`Chunked`); the grid point with the smallest in-sample one-step squared error wins; theta is
  the SES forecast plus half the window's least-squares slope.
- `Classical`: seasonal drift, seasonal naive, drift, SES, Holt and theta (the last three on the
  seasonally adjusted window, the indices added back), over `horizon` steps. Seasonal drift is the
  seasonal naive forecast raised, for each season ahead, by m times the slope from the first season's
  last value to the newest value; with m = 1 it is the naive forecast.

Everything here is linear in the window's values once the season and the grid points are chosen, and
those choices do not change when the window is scaled or shifted; so a·y + b is forecast as a·ŷ + b.
"""

from __future__ import annotations

import math

import torch

SES_ALPHAS = (0.1, 0.3, 0.5, 1.0)
HOLT_ALPHAS = (0.2, 0.5, 0.9)
HOLT_BETAS = (0.02, 0.1, 0.3)
HOLT_PHIS = (0.9, 0.98, 1.0)
INDEX_CYCLES = 6
MIN_PERIOD = 4
MAX_PERIOD = 128
MIN_AUTOCORRELATION = 0.3
CANDIDATES = ("seasonal_drift", "seasonal_naive", "drift", "ses", "holt_damped", "theta")


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


BLOCK = 32
"""The smoothing recurrences run in blocks of this many steps (see `Chunked`)."""


class Chunked(torch.nn.Module):
    """Every grid point's linear recurrence s_t = M·s_{t-1} + c·y_t (state: level, slope; zero before the
    window) run over a window in blocks of `block` steps, as matrix products with fixed matrices:

    - inside a block, from a zero state: the one-step predictions [1, φ]·s_{t-1} are the block's values
      times a lower-triangular Toeplitz matrix of the impulse response, and the state at the block's end
      is the values times M^(block-1-s)·c;
    - across blocks, the state is carried (s ← M^block·s + the block's own end state), one small step a
      block, and its share of each prediction, [1, φ]·M^τ·s, is added.

    The same numbers as the step-by-step recurrence, up to float rounding, at a cost of one matrix
    product per block instead of one step per value."""

    def __init__(self, transition: torch.Tensor, gain: torch.Tensor, phi: torch.Tensor, block: int) -> None:
        super().__init__()
        grid = transition.shape[0]
        read = torch.stack([torch.ones_like(phi), phi], dim=-1)  # (G, 2): the prediction of a state
        powers = [torch.eye(2, dtype=transition.dtype).expand(grid, 2, 2)]
        for _ in range(block):
            powers.append(transition @ powers[-1])
        power = torch.stack(powers[:block])  # (block, G, 2, 2): M^τ
        # The prediction at τ from a value at s < τ in the same block: [1, φ]·M^(τ-1-s)·c.
        response = torch.einsum("gi,kgij,gj->kg", read, power, gain)  # (block, G): lag τ-1-s
        lag = torch.arange(block)[None, :] - 1 - torch.arange(block)[:, None]  # (s, τ)
        within = torch.where(lag[:, :, None] >= 0, response[lag.clamp_min(0)], torch.zeros(()))
        self.register_buffer("within", within.permute(0, 2, 1).reshape(block, grid * block).float())
        # The state at the block's end from its values: M^(block-1-s)·c, (block, G·2).
        ending = torch.einsum("kgij,gj->kgi", power.flip(0), gain)
        self.register_buffer("ending", ending.reshape(block, grid * 2).float())
        self.register_buffer("carry", powers[block].float())  # (G, 2, 2): M^block
        # A carried state's share of the prediction at τ: [1, φ]·M^τ, (G, 2, block).
        self.register_buffer("share", torch.einsum("gi,kgij->gjk", read, power).float())
        self.block = block
        self.within: torch.Tensor
        self.ending: torch.Tensor
        self.carry: torch.Tensor
        self.share: torch.Tensor

    def forward(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One-step predictions (B, blocks, G, block) of `values` (B, W), W a multiple of the block, and
        the state (B, G, 2) after the last value."""
        batch, width = values.shape
        blocks, grid = width // self.block, self.carry.shape[0]
        chunks = values.reshape(batch, blocks, self.block)
        inside = (chunks @ self.within).reshape(batch, blocks, grid, self.block)
        ends = (chunks @ self.ending).reshape(batch, blocks, grid, 2)
        state = torch.zeros_like(ends[:, 0])
        starts = []
        for index in range(blocks):
            starts.append(state)
            state = (self.carry[None] * state[:, :, None, :]).sum(dim=3) + ends[:, index]
        carried = torch.stack(starts, dim=1)  # (B, blocks, G, 2): the state before each block
        share = self.share[None, None]
        return inside + carried[..., 0:1] * share[:, :, :, 0] + carried[..., 1:2] * share[:, :, :, 1], state


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


class SeasonDetector(torch.nn.Module):
    """The season length of each row of a window `width` values wide (float, (B, 1)): see the module's
    text. The autocorrelation of the differenced window at lags 0 … `max_period` comes from its power
    spectrum (the window zero-padded so that no lag wraps around): two products with fixed cosine and
    sine matrices, the same numbers as summing the lagged products, up to float rounding."""

    def __init__(
        self,
        width: int,
        min_period: int = MIN_PERIOD,
        max_period: int = MAX_PERIOD,
        min_autocorrelation: float = MIN_AUTOCORRELATION,
    ) -> None:
        super().__init__()
        self.min_period, self.max_period = min_period, max_period
        self.min_autocorrelation = min_autocorrelation
        size = width + max_period  # the padded length: lags up to max_period do not wrap around
        size += size % 2
        frequency = torch.arange(size // 2 + 1, dtype=torch.float64)
        angle = (
            2 * math.pi * torch.arange(width - 1, dtype=torch.float64)[:, None] * frequency[None, :] / size
        )
        self.register_buffer("spectrum", torch.cat([torch.cos(angle), torch.sin(angle)], dim=1).float())
        # Back from the power spectrum to the autocorrelation, counting both halves of a real spectrum.
        twice = torch.full_like(frequency, 2.0)
        twice[0] = twice[-1] = 1.0
        lags = torch.arange(max_period + 1, dtype=torch.float64)
        back = twice[:, None] * torch.cos(2 * math.pi * frequency[:, None] * lags[None, :] / size) / size
        self.register_buffer("inverse", back.float())
        self.spectrum: torch.Tensor
        self.inverse: torch.Tensor

    def forward(self, values: torch.Tensor, span: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        min_period, max_period = self.min_period, self.max_period
        both = span[:, 1:] * span[:, :-1]
        diffs = (values[:, 1:] - values[:, :-1]) * both
        pairs = both.sum(dim=1, keepdim=True).clamp_min(1.0)
        centred = (diffs - diffs.sum(dim=1, keepdim=True) / pairs) * both
        parts = centred @ self.spectrum
        half = self.inverse.shape[0]
        power = parts[:, :half] * parts[:, :half] + parts[:, half:] * parts[:, half:]
        acf = power @ self.inverse  # (B, lags)
        acf = acf / acf[:, :1].clamp_min(1e-30)
        lags = torch.arange(0, max_period + 1, device=values.device)
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
        best = (
            torch.where(usable, divisors[None, :], torch.zeros_like(shorter)).max(dim=1, keepdim=True).values
        )
        echo = torch.round(period / best.clamp_min(1.0))
        season = torch.where(best > 0, echo, period)
        flat = (diffs.abs().sum(dim=1, keepdim=True) == 0) | (top < min_period)
        return torch.where((peak >= self.min_autocorrelation) & ~flat, season, torch.ones_like(season))


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
        self.recurrences = Chunked(transition, gain, phi, BLOCK)
        self.register_buffer("damping", damping(phi, horizon).float())
        self.register_buffer("phi", phi.float())
        self.register_buffer("alpha", alpha.float())
        self.register_buffer("is_ses", beta == 0)
        self.damping: torch.Tensor
        self.phi: torch.Tensor
        self.alpha: torch.Tensor
        self.is_ses: torch.Tensor

    def smooth(self, values: torch.Tensor, span: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """Paths (B, 3, horizon) of SES, damped Holt and theta for windows that start at zero (the first
        value of the span subtracted) and are zero before their span; `observed` masks the values that
        count in the one-step errors."""
        batch = values.shape[0]
        predicted, state = self.recurrences(values)  # (B, blocks, G, block), (B, G, 2)
        counted = (observed * shift_right(span, 1)).reshape(batch, -1, 1, self.recurrences.block)
        errors = (values.reshape(batch, -1, 1, self.recurrences.block) - predicted) * counted
        sse = (errors * errors).sum(dim=(1, 3))  # (B, G)
        big = torch.full_like(sse, 3.0e38)
        best_ses = torch.where(self.is_ses[None, :], sse, big).argmin(dim=1, keepdim=True)
        best_holt = torch.where(self.is_ses[None, :], big, sse).argmin(dim=1, keepdim=True)
        paths = state[:, :, 0:1] + self.damping[None, :, :] * state[:, :, 1:2]  # (B, G, H)
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
        # Seasonal naive: step j repeats the value m - ((j-1) mod m) steps back.
        back = m.long() - (ahead.long() - 1) % m.long()
        seasonal = gather_rows(values, width - back)
        drift = last + ahead * (last - first) / (count - 1).clamp_min(1.0)
        # Seasonal drift: the season repeated, raised for each season ahead by m times the slope from the
        # first season's last value to the newest value; with m = 1, the naive forecast (the drift
        # candidate is the other half of that pair).
        since = (count - m).clamp_min(1.0)
        slope = (last - gather_rows(values, width - 1 - since.long())) / since
        seasonal_drift = torch.where(
            m > 1, seasonal + torch.ceil(ahead / m) * m * slope, last.expand(-1, horizon)
        )
        indices = seasonal_indices(values, span, m)
        window_phase, future_phase = phase_of(width, horizon, m)
        adjusted = (values - torch.gather(indices, 1, window_phase.expand(values.shape[0], -1))) * span
        start = gather_rows(adjusted, width - count.long())
        smoothed = self.smooth((adjusted - start) * span, span, observed)
        future_index = torch.gather(indices, 1, future_phase)
        smoothed = smoothed + start[:, :, None] + future_index[:, None, :]
        return torch.cat([torch.stack([seasonal_drift, seasonal, drift], dim=1), smoothed], dim=1)
