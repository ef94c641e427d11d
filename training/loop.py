"""The one training loop every trainer uses (digit, forecast, the comparison, the memory probe), and the
loss and accuracy that the classifiers share.

A trainer supplies a batch source and a `loss_of(model, batch)` that returns a `StepLoss`; the loop does
the rest: train mode, backward, gradient clipping, optimizer and schedule steps, progress, timings.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

Batch = TypeVar("Batch")

PROGRESS_FROM_STEPS = 50
"""Shorter loops show no progress bar: they are over before one would say anything."""


@dataclass(frozen=True)
class StepLoss:
    """One step's loss, with how many examples it averaged (the weight of this step in the mean) and,
    for a classifier, how many of them it got right."""

    value: torch.Tensor
    examples: int = 1
    correct: int | None = None


@dataclass
class TrainedSteps:
    """What a run of the loop did, step by step."""

    losses: list[float] = field(default_factory=list)
    examples: list[int] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    correct: int | None = None

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def seconds(self) -> float:
        return sum(self.step_seconds)

    @property
    def mean_loss(self) -> float:
        """The loss averaged over every example seen."""
        return sum(loss * n for loss, n in zip(self.losses, self.examples, strict=True)) / sum(self.examples)

    @property
    def accuracy(self) -> float:
        if self.correct is None:
            raise ValueError("no step counted correct answers: return StepLoss(..., correct=n) from loss_of")
        return self.correct / sum(self.examples)


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    loss_of: Callable[[nn.Module, Batch], StepLoss],
    *,
    steps: int,
    schedule: torch.optim.lr_scheduler.LRScheduler | None = None,
    clip_norm: float | None = 1.0,
    label: str = "training",
) -> TrainedSteps:
    """Take `steps` batches from `batches` and one optimizer step on each, the gradients clipped to
    `clip_norm` (None: not clipped) and `schedule` stepped after it; a progress bar on loops of
    PROGRESS_FROM_STEPS steps or more shows the running loss."""
    model.train()
    done = TrainedSteps()
    bar = tqdm(
        itertools.islice(batches, steps),
        total=steps,
        desc=label,
        unit="step",
        mininterval=2.0,
        disable=steps < PROGRESS_FROM_STEPS,
    )
    total_loss, seen, started = 0.0, 0, time.perf_counter()  # a step's time includes drawing its batch
    for batch in bar:
        loss = loss_of(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.value.backward()
        if clip_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        if schedule is not None:
            schedule.step()
        done.losses.append(loss.value.item())
        done.examples.append(loss.examples)
        if loss.correct is not None:
            done.correct = (done.correct or 0) + loss.correct
        done.step_seconds.append(time.perf_counter() - started)
        total_loss, seen = total_loss + done.losses[-1] * loss.examples, seen + loss.examples
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
        started = time.perf_counter()
    if done.steps < steps:
        raise ValueError(
            f"the batch source ran dry after {done.steps} of {steps} steps: give it more batches"
        )
    return done


def classification_loss(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], label_smoothing: float = 0.0
) -> StepLoss:
    """Cross-entropy of (inputs, labels), counting the right answers."""
    inputs, labels = batch
    logits = model(inputs)
    loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    return StepLoss(loss, len(labels), int((logits.argmax(1) == labels).sum()))


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """The share of (inputs, labels) batches whose largest output is the label, in eval mode."""
    model.eval()
    correct, seen = 0, 0
    for inputs, labels in batches:
        correct += int((model(inputs).argmax(1) == labels).sum())
        seen += len(labels)
    return correct / seen


def chunks(count: int, size: int) -> Iterator[slice]:
    """Slices that cover range(count) in pieces of at most `size`."""
    return (slice(start, min(start + size, count)) for start in range(0, count, size))
