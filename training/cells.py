"""The networks `training.compare` sets side by side: one design per task, the recurrent cell swapped.

`DigitRecurrent` is `training.networks.DigitLSTM` with the cell (`rnn` = tanh Elman RNN, `lstm`, `gru`)
and the direction as parameters; `DigitVariantClassifier` adds the softmax, so its export has exactly
digit_lstm's inputs, outputs and in-graph normalisation. `CellForecaster` is a small forecaster with
the service's forecasting interface (`series`, `mask` -> `mean`, `std`) and the cell as a parameter.
"""

from __future__ import annotations

from typing import Final, Literal, cast, get_args

import torch
from torch import nn

from training.harmonics import fit_line, relative_steps
from training.networks import IMAGE_SIZE, MNIST_MEAN, MNIST_STD, NUM_CLASSES

CellType = Literal["rnn", "lstm", "gru"]
CELL_TYPES: Final[tuple[CellType, ...]] = get_args(CellType)
GATE_BLOCKS: Final[dict[CellType, int]] = {"rnn": 1, "lstm": 4, "gru": 3}
"""Weight blocks per cell: an LSTM has 4 (input, forget, cell, output), a GRU 3 (reset, update, new)."""


def cell_type(name: str) -> CellType:
    """`name` as a CellType; a clear error for anything else."""
    if name not in CELL_TYPES:
        raise ValueError(f"unknown cell type {name!r}: use one of {', '.join(CELL_TYPES)}")
    return cast(CellType, name)


def recurrent_layer(
    cell: CellType,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    bias: bool = True,
) -> nn.RNNBase:
    """torch's nn.RNN (tanh), nn.LSTM or nn.GRU, batch first."""
    layer_class = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell_type(cell)]
    return cast(
        nn.RNNBase,
        layer_class(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
            bias=bias,
        ),
    )


def recurrent_parameters(
    cell: CellType, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool = False
) -> int:
    """The arithmetic count of a recurrent stack's weights: per layer and direction, gates × (H·(I+H) + 2H)
    (torch keeps two bias vectors). It is what "an LSTM has 4×, a GRU 3× a plain RNN's" refers to."""
    directions = 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else hidden_size * directions
        per_direction = GATE_BLOCKS[cell] * (hidden_size * (layer_input + hidden_size) + 2 * hidden_size)
        total += directions * per_direction
    return total


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class DigitRecurrent(nn.Module):
    """Reads a 28×28 image as 28 time steps of 28 pixels with the chosen cell; classifies from the end.

    Input: raw pixels in [0, 255], white digit on black, shape (batch, 28, 28). Output: logits (batch, 10).
    One direction: the head reads the last step's output (as DigitLSTM). Bidirectional: the head reads
    the forward direction's last step and the backward direction's first, each having seen every row.
    """

    def __init__(
        self,
        cell: CellType,
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.1,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.recurrent = recurrent_layer(cell, IMAGE_SIZE, hidden_size, num_layers, bidirectional, dropout)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), NUM_CLASSES)
        self.pixel_mean = 255.0 * MNIST_MEAN
        self.pixel_std = 255.0 * MNIST_STD

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = (pixels - self.pixel_mean) / self.pixel_std
        out, _ = self.recurrent(x)
        if self.bidirectional:
            summary = torch.cat([out[:, -1, : self.hidden_size], out[:, 0, self.hidden_size :]], dim=1)
        else:
            summary = out[:, -1, :]
        return self.head(summary)


class DigitVariantClassifier(nn.Module):
    """What is exported: a DigitRecurrent plus the softmax (as training.networks.DigitClassifier)."""

    def __init__(self, network: DigitRecurrent) -> None:
        super().__init__()
        self.network = network

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(pixels)
        return logits, torch.softmax(logits, dim=-1)


class CellForecaster(nn.Module):
    """A plain forecaster for comparing cells: in the graph, the window's least-squares line is removed
    and the residual scaled by its std; a bias-free recurrent layer reads it in patches of `patch_size`
    values with the mask; linear heads give the next `max_horizon` values' mean (added to the line's
    extrapolation) and std, in the series' units.

    Inputs and outputs as training.networks.SeriesGRU: `series`, `mask` (batch, time), time a multiple
    of `patch_size`, right-aligned with zero left padding; `mean`, `std` (batch, max_horizon). With no
    bias, a zero patch leaves a zero state zero for all three cells, so padding does not leak in.
    """

    def __init__(
        self, cell: CellType, hidden_size: int = 64, patch_size: int = 8, max_horizon: int = 32
    ) -> None:
        super().__init__()
        self.cell = cell
        self.patch_size = patch_size
        self.max_horizon = max_horizon
        self.recurrent = recurrent_layer(cell, 2 * patch_size, hidden_size, bias=False)
        self.mean_head = nn.Linear(hidden_size, max_horizon)
        self.spread_head = nn.Linear(hidden_size, max_horizon)

    def forward(self, series: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length = series.shape
        # A masked least-squares line, time counted back from the newest value (0), is removed and
        # extrapolated; the recurrent layer reads the residual in units of its standard deviation.
        y_mean, slope, t_mean, residual, count = fit_line(series, mask, relative_steps(length, series))
        scale = torch.sqrt((residual * residual).sum(dim=1, keepdim=True) / count).clamp_min(1e-6)
        features = torch.cat(
            [
                (residual / scale).reshape(batch, -1, self.patch_size),
                mask.reshape(batch, -1, self.patch_size),
            ],
            dim=2,
        )
        out, _ = self.recurrent(features)
        state = out[:, -1, :]
        ahead = torch.arange(1, self.max_horizon + 1, dtype=series.dtype, device=series.device)
        mean = y_mean + slope * (ahead - t_mean) + scale * self.mean_head(state)
        std = scale * (nn.functional.softplus(self.spread_head(state)) + 1e-3)
        return mean, std
