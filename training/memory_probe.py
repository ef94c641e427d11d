"""How far back each recurrent cell remembers, measured: the copy-first task.

A sequence of L symbols (one-hot, `SYMBOLS` of them, drawn uniformly) is read one symbol per step; the
answer is the first symbol, so everything after it is a distraction and the network has to carry one
symbol through L - 1 steps. Each cell gets the same budget at every L: `steps` training steps at each
of `learning_rates` (the best one counts, as the
cells need different rates), the same
batch, hidden size and seed. The score is the accuracy on fresh sequences against chance, 1 / SYMBOLS.
Lengths run shortest first; a cell at chance at some L is not trained at longer ones (recorded as
skipped), which keeps the probe within minutes where a cell has nothing left to learn.

Initialisation is torch's default, except the LSTM's forget-gate bias, set to 1 (Gers et al.; Keras's
default `unit_forget_bias`): with torch's 0 it did not learn even L = 10 in a few hundred steps.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from training import loop
from training.cells import CellType, recurrent_layer

logger = logging.getLogger(__name__)

SYMBOLS = 8
CHANCE = 1.0 / SYMBOLS
REMEMBERS_AT = 0.9
"""The accuracy at which a cell counts as remembering over a length."""
AT_CHANCE = CHANCE + 0.05
"""At or below this accuracy a cell learned nothing at that length; longer ones are skipped."""


@dataclass(frozen=True)
class ProbeBudget:
    """What every cell gets at every sequence length."""

    steps: int = 1000
    batch_size: int = 64
    hidden_size: int = 64
    learning_rates: tuple[float, ...] = (1e-3, 1e-2)
    eval_sequences: int = 512


def copy_first_batch(
    generator: torch.Generator, batch_size: int, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot sequences (batch, length, SYMBOLS) and their first symbols (batch,)."""
    symbols = torch.randint(0, SYMBOLS, (batch_size, length), generator=generator)
    return F.one_hot(symbols, SYMBOLS).to(torch.float32), symbols[:, 0]


class CopyFirstReader(nn.Module):
    """A one-layer recurrent network that names the first symbol after reading the whole sequence."""

    def __init__(self, cell: CellType, hidden_size: int) -> None:
        super().__init__()
        self.recurrent = recurrent_layer(cell, SYMBOLS, hidden_size)
        self.head = nn.Linear(hidden_size, SYMBOLS)
        if cell == "lstm":  # gate order: input, forget, cell, output
            biases = dict(self.recurrent.named_parameters())
            with torch.no_grad():
                biases["bias_hh_l0"][hidden_size : 2 * hidden_size].fill_(1.0)
                biases["bias_ih_l0"][hidden_size : 2 * hidden_size].fill_(0.0)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        out, _ = self.recurrent(sequences)
        return self.head(out[:, -1, :])


def train_and_score(cell: CellType, length: int, budget: ProbeBudget, lr: float, seed: int) -> dict[str, Any]:
    """Train a CopyFirstReader on copy-first at `length` at `lr`; its accuracy on fresh sequences."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = CopyFirstReader(cell, budget.hidden_size)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    batches = (copy_first_batch(generator, budget.batch_size, length) for _ in itertools.count())
    label = f"probe {cell} L={length} lr {lr:g}"
    trained = loop.train(
        network, optimizer, batches, loop.classification_loss, steps=budget.steps, label=label
    )
    test_generator = torch.Generator().manual_seed(seed + 1_000_003)
    tests = (
        copy_first_batch(test_generator, part.stop - part.start, length)
        for part in loop.chunks(budget.eval_sequences, 256)
    )
    tail = trained.losses[-max(1, trained.steps // 10) :]
    return {
        "lr": lr,
        "accuracy": loop.accuracy(network, tests),
        "final_train_loss": sum(tail) / len(tail),
        "chance_loss": math.log(SYMBOLS),
        "seconds": round(trained.seconds, 2),
    }


def run_probe(
    cells: list[CellType],
    lengths: list[int],
    budget: ProbeBudget,
    seed: int,
    on_result: Callable[[dict[str, Any]], None] = lambda probe: None,
) -> dict[str, Any]:
    """Every cell at every length (shortest first, cells interleaved); `on_result` sees the probe so far."""
    probe: dict[str, Any] = {
        "task": f"copy-first: name the first of L uniformly drawn symbols ({SYMBOLS} symbols, one-hot)",
        "chance": CHANCE,
        "remembers_at_accuracy": REMEMBERS_AT,
        "budget": asdict(budget) | {"optimizer": "Adam, gradient clip 1.0", "seed": seed},
        "init": "torch defaults; LSTM forget-gate bias 1",
        "lengths": sorted(lengths),
        "results": [],
    }
    given_up: set[str] = set()
    for length in sorted(lengths):
        for cell in cells:
            if cell in given_up:
                probe["results"].append({"cell": cell, "length": length, "accuracy": None, "skipped": True})
                continue
            runs = [train_and_score(cell, length, budget, lr, seed) for lr in budget.learning_rates]
            best = max(runs, key=lambda run: run["accuracy"])
            logger.info(
                "probe %s L=%d: accuracy %.3f at lr %g (chance %.3f)",
                cell,
                length,
                best["accuracy"],
                best["lr"],
                CHANCE,
            )
            probe["results"].append(
                {"cell": cell, "length": length, "accuracy": best["accuracy"], "runs": runs}
            )
            if best["accuracy"] <= AT_CHANCE:
                given_up.add(cell)
            on_result(probe)
    return probe


def longest_remembered(probe: dict[str, Any], cell: str) -> int | None:
    """The longest L at which `cell` reached REMEMBERS_AT accuracy (None: not even the shortest)."""
    lengths = [
        r["length"]
        for r in probe["results"]
        if r["cell"] == cell and r["accuracy"] is not None and r["accuracy"] >= REMEMBERS_AT
    ]
    return max(lengths, default=None)
