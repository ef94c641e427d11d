"""Forecaster v6 (`series_gru`): classical forecasts weighed by a backtest on the history's own end, and a
GRU that reads the series and sets how wide its bands are.

Inside the graph, for each row of a batch:

1. The values (missing ones carried forward) are taken relative to the first of them and divided by
   their mean absolute difference, so nothing below depends on the series' level or scale.
2. The season length is the caller's hint (`season` ≥ 1) or, for 0, detected from the autocorrelation
   of the differenced last `window` values (`training.series_candidates.SeasonDetector`); a season the
   window does not hold twice counts as none.
3. The candidates (`training.series_candidates`: seasonal drift, seasonal naive, drift, SES, damped
   Holt and theta on the seasonally adjusted window) and a `harmonic` one (the line and the
   periodogram's strongest sinusoid over the whole context, as forecaster v2 fits them,
   `training.harmonics`) forecast the future from the window, and the b values after each of `ORIGINS`
   earlier origins b apart from the values before them (b = the season, at least 8 and at most 48
   steps).
4. Weights: the `TOP` candidates with the smallest backtest MAE, in proportion to MAE^-`SHARPNESS`;
   the harmonic one competes only where the context holds `MIN_CYCLES` (about two) of its sinusoid's cycles
   (from v6).
5. Spread: the weighted forecast's backtest errors, pooled as e²/step and grown as √step, widened by
   `WIDTH` (fitted on the real validation series), then scaled per step by the GRU's factor.

The GRU (`hidden_size`, one layer, no bias) reads the context in patches: the values relative to the
newest one, scaled and squashed by asinh, and the mask; it reads the series and its mirror image and
the two readings are averaged. Its last state and the backtest's summary feed the spread head, whose
factor lies in [e^-SPREAD_BOUND, e^SPREAD_BOUND] and starts at 1. Measured on the real validation
series, a GRU trained on generated series that also reweighed the candidates made the forecasts worse
(geometric-mean relative MASE 0.715 → 0.751), so the weights are the backtest's alone.

Properties: a·y + b is forecast as a·ŷ + b with std |a|·σ (the GRU reads only scale-free, mirrored
features); a constant series is forecast as that constant; left padding (value 0, mask 0) changes
nothing.
"""

from __future__ import annotations

import torch
from torch import nn

from training import harmonics
from training import series_candidates as classical

ORIGINS = 4
WEIGHT_ORIGINS = 4
TOP = 3
SHARPNESS = 4.0
"""The chosen candidates' weights go as backtest MAE ** -SHARPNESS (2 before v5)."""
SPREAD_BOUND = 2.5
"""The GRU scales each step's spread by a factor between e^-SPREAD_BOUND and e^SPREAD_BOUND."""
WIDTH = 2.25
MIN_BACKTEST = 8
MAX_BACKTEST = 48
MIN_CYCLES = 1.75
"""The harmonic candidate is weighed only where the context holds this many of its cycles (from v6): two,
less what the frequency's estimate can miss on a history of two cycles (on noisy sines of two periods of
12 to 50 steps, half the estimates fall short of 2.0, the lowest 1 % by 0.02 to 0.12 of a cycle)."""
UNFIT = 1.0e6
"""The backtest MAE given to a candidate that may not compete (in units of the mean absolute step)."""
NAMES = (*classical.CANDIDATES, "harmonic")


def asinh(values: torch.Tensor) -> torch.Tensor:
    """asinh, written out (ONNX opset 17 export has no aten::asinh)."""
    size = values.abs()
    return torch.sign(values) * torch.log(size + torch.sqrt(size * size + 1.0))


def shifted(values: torch.Tensor, by: torch.Tensor) -> torch.Tensor:
    """Each row of `values` (B, L) moved `by[row]` places toward the end (zeros come in): (B, L)."""
    length = values.shape[1]
    source = torch.arange(length, device=values.device)[None, :] - by.long()
    picked = torch.gather(values, 1, source.clamp_min(0))
    return picked * (source >= 0).to(values.dtype)


class BacktestGRU(nn.Module):
    """See the module's text. Inputs `series`, `mask` (B, L) and `season` (B, 1); outputs `mean` and
    `std` (B, max_horizon)."""

    def __init__(
        self,
        patch_size: int = 16,
        hidden_size: int = 64,
        max_horizon: int = 128,
        context_length: int = 1024,
        window: int = 256,
        shortest_period: float = 2.5,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.max_horizon = max_horizon
        self.window = window
        self.origins = ORIGINS
        self.weight_origins = WEIGHT_ORIGINS
        self.top = TOP
        self.sharpness = SHARPNESS
        self.spread_bound = SPREAD_BOUND
        self.width = WIDTH
        self.min_backtest = MIN_BACKTEST
        self.max_backtest = MAX_BACKTEST
        self.min_cycles = MIN_CYCLES
        self.unfit = UNFIT
        self.max_season = classical.MAX_PERIOD
        self.candidates = len(NAMES)
        self.harmonic_index = NAMES.index("harmonic")
        self.candidate_paths = classical.Classical(window, max_horizon)
        self.season_detector = classical.SeasonDetector(window)
        self.register_buffer("frequency_grid", harmonics.frequency_grid(context_length, shortest_period))
        self.register_buffer("fine_offsets", harmonics.fine_offsets())
        self.frequency_grid: torch.Tensor
        self.fine_offsets: torch.Tensor
        self.gru = nn.GRU(2 * patch_size, hidden_size, batch_first=True, bias=False)
        summary = hidden_size + 2 * len(NAMES) + 4
        spread_out = nn.Linear(hidden_size, max_horizon)
        with torch.no_grad():  # the head starts at zero: the backtest's spread as it is
            spread_out.weight.zero_()
            spread_out.bias.zero_()
        self.spread_head = nn.Sequential(nn.Linear(summary, hidden_size), nn.GELU(), spread_out)

    def last_window(self, values: torch.Tensor) -> torch.Tensor:
        """The last `window` columns of `values` (B, L), zeros in front when L is shorter: (B, window)."""
        padding = torch.zeros(values.shape[0], self.window, dtype=values.dtype, device=values.device)
        return torch.cat([padding, values], dim=1)[:, -self.window :]

    def harmonic(
        self, z: torch.Tensor, mask: torch.Tensor, by: torch.Tensor, frequency: torch.Tensor
    ) -> torch.Tensor:
        """The line and one sinusoid at `frequency` fitted to each row of `z` moved `by` places: (B, H)."""
        values, observed = shifted(z, by), shifted(mask, by)
        steps = harmonics.relative_steps(values.shape[1], values)
        line = harmonics.fit_line(values, observed, steps)
        sinusoid = harmonics.fit_sinusoid(line.residual, observed, steps, line, frequency, self.max_horizon)
        ahead = torch.arange(1, self.max_horizon + 1, dtype=z.dtype, device=z.device)[None, :]
        return line.level + line.slope * (ahead - line.t_mean) + sinusoid.future

    def classical_paths(
        self,
        z: torch.Tensor,
        mask: torch.Tensor,
        season: torch.Tensor,
        by: torch.Tensor,
        frequency: torch.Tensor,
    ) -> torch.Tensor:
        """Every candidate's forecast (B, len(NAMES), H) from the values before `by` steps ago."""
        values = self.last_window(shifted(z, by))
        observed = self.last_window(shifted(mask, by))
        filled, span = classical.fill(values, observed)
        paths = self.candidate_paths(filled * span, span, observed, season)
        return torch.cat([paths, self.harmonic(z, mask, by, frequency)[:, None, :]], dim=1)

    def forward(
        self, series: torch.Tensor, mask: torch.Tensor, season: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std, _ = self.parts(series, mask, season)
        return mean, std

    def parts(
        self, series: torch.Tensor, mask: torch.Tensor, season: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean and std (B, H), and the GRU's log-factor on the backtest's spread (B, H)."""
        batch = series.shape[0]
        with torch.no_grad():
            weights, paths, spread, summary, origin, scale, newest = self.classical(series, mask, season)
        # The GRU reads the series and its mirror image, and the two readings are averaged: -y is
        # forecast as -ŷ with the same spread.
        scaled = asinh((series - newest) / scale / 4.0) * mask
        values = torch.cat([scaled, -scaled], dim=0).reshape(2 * batch, -1, self.patch_size)
        present = torch.cat([mask, mask], dim=0).reshape(2 * batch, -1, self.patch_size)
        out, _ = self.gru(torch.cat([values, present], dim=2))
        state = torch.cat([out[:, -1, :], torch.cat([summary, summary], dim=0)], dim=1)
        factor = self.spread_bound * torch.tanh(self.spread_head(state))
        log_factor = 0.5 * (factor[:batch] + factor[batch:])
        combined = (weights[:, :, None] * paths).sum(dim=1)
        std_z = spread * torch.exp(log_factor)
        return origin + scale * combined, scale * std_z, log_factor

    def classical(
        self, series: torch.Tensor, mask: torch.Tensor, season: torch.Tensor
    ) -> tuple[
        torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
    ]:
        """Rule weights (B, C), the candidates' paths (B, C, H) and spread (B, H) in scaled units, the
        backtest's summary for the heads, and the frame: origin, scale and the newest value."""
        length = series.shape[1]
        filled, span = classical.fill(series, mask)
        count = span.sum(dim=1, keepdim=True)
        origin = classical.gather_rows(filled, length - count.long())
        relative = (filled - origin) * span
        both = mask[:, 1:] * mask[:, :-1]
        steps_abs = ((relative[:, 1:] - relative[:, :-1]).abs() * both).sum(dim=1, keepdim=True)
        scale = steps_abs / both.sum(dim=1, keepdim=True).clamp_min(1.0)
        magnitude = relative.abs().max(dim=1, keepdim=True).values + origin.abs()
        scale = torch.where(scale > 1e-6 * magnitude, scale, 1e-6 * magnitude + 1e-30)
        z = relative / scale
        newest = filled[:, -1:]
        window_z, window_span = self.last_window(z), self.last_window(span)
        window_count = window_span.sum(dim=1, keepdim=True)
        hinted = season >= 1
        detected = self.season_detector(window_z, window_span, window_count)
        season = torch.where(hinted, torch.floor(season), detected).clamp(1.0, float(self.max_season))
        season = torch.where(window_count >= 2 * season, season, torch.ones_like(season))
        backtest = torch.clamp(
            torch.clamp(season, min=float(self.min_backtest)), max=float(self.max_backtest)
        )
        # The harmonic candidate's frequency, found once on the whole context.
        steps = harmonics.relative_steps(length, z)
        line = harmonics.fit_line(z, mask, steps)
        frequency = harmonics.periodogram_peak(
            line.residual, mask, steps, line, self.frequency_grid, self.fine_offsets
        )
        shifts = (
            torch.arange(0, self.origins + 1, dtype=z.dtype, device=z.device)[None, :] * backtest
        )  # (B, O+1)
        batch = z.shape[0]
        stacked = self.classical_paths(  # every origin's window as rows of one batch
            z.repeat(self.origins + 1, 1),
            mask.repeat(self.origins + 1, 1),
            season.repeat(self.origins + 1, 1),
            shifts.T.reshape(-1, 1),
            frequency.repeat(self.origins + 1, 1),
        ).reshape(self.origins + 1, batch, self.candidates, self.max_horizon)
        # An origin before a short history leaves an empty window and a non-finite path; it is not counted.
        stacked = torch.where(torch.isfinite(stacked), stacked, torch.zeros_like(stacked))
        paths, past = stacked[0], stacked[1:, :, :, : self.max_backtest]  # (O, B, C, b)
        ahead = torch.arange(1, self.max_backtest + 1, device=z.device)[None, None, :]  # (1, 1, b)
        at = length - shifts.T[1:, :, None].long() + ahead - 1  # (O, B, b)
        truth = torch.gather(z[None, :, :].expand(self.origins, -1, -1), 2, at.clamp(0, length - 1))
        seen = torch.gather(mask[None, :, :].expand(self.origins, -1, -1), 2, at.clamp(0, length - 1))
        before = count[None, :, :] - shifts.T[1:, :, None]  # values before each origin: (O, B, 1)
        usable = (before >= torch.clamp(2 * season, min=8.0)[None, :, :]) | (
            (shifts.T[1:, :, None] == backtest[None, :, :]) & (before >= 2)
        )
        counted = seen * (ahead <= backtest[None, :, :]).to(z.dtype) * usable.to(z.dtype)  # (O, B, b)
        errors = (past - truth[:, :, None, :]) * counted[:, :, None, :]
        recent = counted[: self.weight_origins].sum(dim=(0, 2))[:, None].clamp_min(1.0)  # (B, 1)
        mae = errors[: self.weight_origins].abs().sum(dim=(0, 3)) / recent  # (B, C)
        # The harmonic competes only where the context holds `min_cycles` of its sinusoid. The coarse peak
        # has two cycles at least, but its refinement can settle lower, on a single wave laid over the
        # bends of a trend (a recession and its recovery); the frequency was found on the whole context,
        # so its backtest has seen the values it is scored on and looks better than it will forecast.
        few_cycles = line.observed * frequency.to(z.dtype) < self.min_cycles  # (B, 1)
        is_harmonic = torch.arange(self.candidates, device=z.device)[None, :] == self.harmonic_index
        mae = torch.where(few_cycles & is_harmonic, torch.full_like(mae, self.unfit), mae)
        # Ties (SES with α = 1 is the naive forecast) go to the earlier candidate, in every runtime alike:
        # the heads read the weights, so ONNX Runtime and torch must pick the same ones.
        order = torch.arange(self.candidates, dtype=z.dtype, device=z.device)[None, :]
        best = torch.topk(-(mae * (1.0 + 1e-5 * order) + 1e-9 * order), self.top, dim=1).indices
        inverse = mae.clamp_min(1e-6) ** -self.sharpness
        chosen = torch.zeros_like(mae).scatter(1, best, torch.gather(inverse, 1, best))
        weights = chosen / chosen.sum(dim=1, keepdim=True)
        combined = (errors * weights[None, :, :, None]).sum(dim=2)  # (O, B, b)
        per_step = ahead.to(z.dtype)
        pooled = (combined * combined / per_step * counted).sum(dim=(0, 2)) / counted.sum(
            dim=(0, 2)
        ).clamp_min(1.0)
        horizon = torch.arange(1, self.max_horizon + 1, dtype=z.dtype, device=z.device)[None, :]
        spread = self.width * torch.sqrt(pooled[:, None] + 1e-4) * torch.sqrt(horizon)
        relative_mae = torch.log(mae.clamp_min(1e-6) / mae.min(dim=1, keepdim=True).values.clamp_min(1e-6))
        summary = torch.cat(
            [
                relative_mae.clamp(max=5.0) / 2.0,
                weights,
                torch.log(count) / 4.0,
                torch.log(season) / 4.0,
                hinted.to(z.dtype),
                torch.log(pooled[:, None] + 1e-4) / 4.0,
            ],
            dim=1,
        )
        return weights, paths, spread, summary, origin, scale, newest


def parameters_described() -> dict[str, object]:
    """The graph's fixed settings, for the model's metadata."""
    return {
        "candidates": list(NAMES),
        "origins": ORIGINS,
        "weight_origins": WEIGHT_ORIGINS,
        "top": TOP,
        "sharpness": SHARPNESS,
        "width": WIDTH,
        "backtest_steps": f"the season, clamped to [{MIN_BACKTEST}, {MAX_BACKTEST}]",
        "harmonic_min_cycles": MIN_CYCLES,
        "smoothing_grid": {
            "ses_alpha": list(classical.SES_ALPHAS),
            "holt_alpha": list(classical.HOLT_ALPHAS),
            "holt_beta": list(classical.HOLT_BETAS),
            "holt_phi": list(classical.HOLT_PHIS),
        },
        "max_season": classical.MAX_PERIOD,
    }
