"""The two recurrent networks. Each one's forward takes raw values and does its own normalisation,
so the exported graphs carry their preprocessing and the service feeds them what clients send."""

from __future__ import annotations

from typing import Final

import torch
from torch import nn

from training import harmonics

# MNIST pixel statistics after scaling to [0, 1]; used inside DigitLSTM.forward and nowhere else.
MNIST_MEAN: Final[float] = 0.1307
MNIST_STD: Final[float] = 0.3081
IMAGE_SIZE = 28
NUM_CLASSES = 10


class DigitLSTM(nn.Module):
    """Reads a 28×28 image as 28 time steps of 28 pixels; classifies from the last step.

    Input: raw pixels in [0, 255], white digit on black, shape (batch, 28, 28).
    Output: logits of shape (batch, 10).
    """

    def __init__(self, hidden_size: int = 128, num_layers: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(IMAGE_SIZE, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout)
        self.head = nn.Linear(hidden_size, NUM_CLASSES)
        self.pixel_mean = 255.0 * MNIST_MEAN
        self.pixel_std = 255.0 * MNIST_STD

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - self.pixel_mean) / self.pixel_std
        out, _ = self.lstm(x)
        return self.head(out[:, -1, :])


class DigitClassifier(nn.Module):
    """What is exported: DigitLSTM plus the softmax, so the graph returns both logits and probabilities."""

    def __init__(self, network: DigitLSTM) -> None:
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(pixels)
        return logits, torch.softmax(logits, dim=-1)


class SeriesGRU(nn.Module):
    """Forecasts the next `max_horizon` values of a series with a Gaussian interval for each.

    Input: `series` and `mask`, shape (batch, time), time a multiple of `patch_size`; series
    right-aligned, zero-padded on the left where mask is 0 (see `service.series.pad_left`).
    Output: `mean` and `std` in the series' own units, shape (batch, max_horizon).

    Inside the graph: a masked least-squares line is fitted to the window and removed; the residual
    is scaled by its standard deviation and read by a GRU in patches of `patch_size` values; the head
    predicts the residual's continuation and its spread, and the line is extrapolated back on top.
    So the forecast moves with any affine change of the input (a·y + b), and a constant series
    (zero residual) gives exactly that constant as its forecast.

    The GRU has no bias: a zero patch leaves a zero state unchanged, so left padding cannot leak
    into the answer. A series forecast alone or padded in a batch gives the same result.
    """

    def __init__(
        self,
        patch_size: int = 8,
        hidden_size: int = 128,
        num_layers: int = 2,
        max_horizon: int = 128,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.max_horizon = max_horizon
        self.gru = nn.GRU(2 * patch_size, hidden_size, num_layers=num_layers, batch_first=True, bias=False)
        self.mean_head = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, max_horizon)
        )
        self.spread_head = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, max_horizon)
        )

    def forward(self, series: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length = series.shape
        # Time index relative to the newest value (0), so alignment does not depend on padding.
        line = harmonics.fit_line(series, mask, harmonics.relative_steps(length, series))
        y_mean, slope, t_mean, residual, count = line
        spread = torch.sqrt((residual * residual).sum(dim=1, keepdim=True) / count)
        # A series whose residual is below float32 resolution of its own magnitude (a constant or a
        # straight line) has nothing for the GRU to read: its forecast is the line itself. The floor
        # is relative, so scale invariance holds for every series that actually moves.
        floor = 1e-6 * (y_mean.abs() + (slope * count).abs() + 1.0)
        informative = spread > floor
        scale = torch.where(informative, spread, floor)
        z = residual / scale
        features = torch.cat(
            [z.reshape(batch, -1, self.patch_size), mask.reshape(batch, -1, self.patch_size)], dim=2
        )
        out, _ = self.gru(features)
        state = out[:, -1, :]
        mu = self.mean_head(state)
        # The spread head learns from the state but does not shape it: the likelihood's gradient
        # through the trunk stalled learning of the mean.
        log_sigma = self.spread_head(state.detach())
        future = torch.arange(1, self.max_horizon + 1, dtype=series.dtype, device=series.device)
        trend = y_mean + slope * (future - t_mean)
        mean = trend + torch.where(informative, scale * mu, torch.zeros_like(mu))
        std = scale * (nn.functional.softplus(log_sigma) + 1e-3)
        return mean, std


class HarmonicGRU(nn.Module):
    """Forecaster v2: a line and one sinusoid fitted in the graph, a GRU that reads what they leave.

    Input and output as `SeriesGRU`. Inside the graph: a masked least-squares line is removed and the
    residual scaled by its standard deviation (z); the periodogram's peak gives one frequency, and a
    sinusoid at it is fitted jointly with the line (`training.harmonics`). A bias-free GRU reads, in
    patches of `patch_size`, z, what the sinusoid leaves of z, and the mask. Its last state and three
    summaries of the fit (how much of z the sinusoid leaves, the period and the window length, both
    as logs) feed the heads: a per-step gate on the sinusoid's continuation plus a correction, and
    the spread, in three parts: one in units of what the fit leaves (noise), one in units of z (what
    the fit cannot know), and, unlearned, how far the newest patch sits off the fit on average.
    `std_calibration` (one factor per step, fitted after training on held-out series) scales it.

    The fits are linear in the input and the periodogram's peak does not depend on its scale, so the
    forecast moves with any affine change of the input; a constant series (zero residual) is forecast
    as exactly that constant. The GRU has no bias, so zero padding leaves its state zero.
    """

    def __init__(
        self,
        patch_size: int = 8,
        hidden_size: int = 64,
        num_layers: int = 2,
        max_horizon: int = 128,
        context_length: int = 1024,
        shortest_period: float = 2.5,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.max_horizon = max_horizon
        self.register_buffer("frequency_grid", harmonics.frequency_grid(context_length, shortest_period))
        self.register_buffer("fine_offsets", harmonics.fine_offsets())
        self.register_buffer("std_calibration", torch.ones(max_horizon))
        self.frequency_grid: torch.Tensor
        self.fine_offsets: torch.Tensor
        self.std_calibration: torch.Tensor
        self.gru = nn.GRU(3 * patch_size, hidden_size, num_layers=num_layers, batch_first=True, bias=False)
        width = hidden_size + 3
        mean_in, mean_out = nn.Linear(width, hidden_size), nn.Linear(hidden_size, 2 * max_horizon)
        self.mean_head = nn.Sequential(mean_in, nn.GELU(), mean_out)
        self.spread_head = nn.Sequential(
            nn.Linear(width, hidden_size), nn.GELU(), nn.Linear(hidden_size, 2 * max_horizon)
        )
        with torch.no_grad():  # start from "trust the sinusoid": gate ≈ 0.95, no correction
            mean_out.weight.mul_(0.1)
            mean_out.bias[:max_horizon] = 3.0
            mean_out.bias[max_horizon:] = 0.0

    def forward(self, series: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length = series.shape
        steps = harmonics.relative_steps(length, series)
        line = harmonics.fit_line(series, mask, steps)
        spread = torch.sqrt((line.residual * line.residual).sum(dim=1, keepdim=True) / line.observed)
        # As in SeriesGRU: a residual below float32 resolution of the series' own magnitude (a
        # constant or a straight line) leaves nothing to read, and the forecast is the line itself.
        floor = 1e-6 * (line.level.abs() + (line.slope * line.observed).abs() + 1.0)
        informative = spread > floor
        scale = torch.where(informative, spread, floor)
        z = line.residual / scale
        frequency = harmonics.periodogram_peak(z, mask, steps, line, self.frequency_grid, self.fine_offsets)
        sinusoid = harmonics.fit_sinusoid(z, mask, steps, line, frequency, self.max_horizon)
        left = (z - sinusoid.in_window) * mask
        unexplained = torch.sqrt((left * left).sum(dim=1, keepdim=True) / line.observed)
        # How far the newest values sit off the fit: noise for a sine, but a level the fit missed for a
        # series it does not describe (a random walk); it widens the band as it is, unlearned.
        tail = mask[:, -self.patch_size :]
        off_fit = (left[:, -self.patch_size :].sum(dim=1, keepdim=True) / tail.sum(dim=1, keepdim=True)).abs()
        features = torch.cat(
            [
                z.reshape(batch, -1, self.patch_size),
                left.reshape(batch, -1, self.patch_size),
                mask.reshape(batch, -1, self.patch_size),
            ],
            dim=2,
        )
        out, _ = self.gru(features)
        summary = torch.cat(
            [
                out[:, -1, :],
                torch.log(unexplained + 1e-6),
                -torch.log(sinusoid.frequency.clamp_min(1e-6)) / 4.0,
                torch.log(line.observed) / 4.0,
            ],
            dim=1,
        )
        gate_logit, correction = self.mean_head(summary).split(self.max_horizon, dim=1)
        # The spread heads learn from the state but do not shape it (as in SeriesGRU).
        noise_part, model_part = self.spread_head(summary.detach()).split(self.max_horizon, dim=1)
        mean_z = torch.sigmoid(gate_logit) * sinusoid.future + correction
        ahead = torch.arange(1, self.max_horizon + 1, dtype=series.dtype, device=series.device)
        trend = line.level + line.slope * (ahead - line.t_mean)
        mean = trend + torch.where(informative, scale * mean_z, torch.zeros_like(mean_z))
        noise_sd = unexplained * nn.functional.softplus(noise_part)
        model_sd = nn.functional.softplus(model_part)
        std_z = torch.sqrt(noise_sd * noise_sd + model_sd * model_sd + off_fit * off_fit + 1e-8)
        std = scale * self.std_calibration * std_z
        return mean, std
