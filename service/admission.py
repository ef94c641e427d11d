"""Admission: whether a model's queue takes more inputs, and the one wording of each refusal, for a
local batcher (`service.batching`) and for a model engine's queue seen from a worker
(`service.engine.queue_state`)."""

from __future__ import annotations

from typing import NamedTuple

from service.errors import ModelNotReady, Overloaded, ServiceError, ShuttingDown
from service.metrics import BatcherMetrics


class QueueState(NamedTuple):
    """A model's queue, as admission needs it. (A tuple: read on every request, built in no time.)"""

    depth: int
    """Inputs waiting for a model call."""
    capacity: int
    """The most inputs that may wait (`max_queue_size`)."""
    serving: bool
    """False once the batcher is closing: the service shuts down."""
    problem: str | None
    """Why the model takes no inputs although it serves (its model calls kept failing); None: healthy."""
    retry_after_s: int
    """When a refused client may try again."""


def refusal(model: str, state: QueueState, count: int = 1) -> ServiceError | None:
    """Why `count` more inputs for `model` would be refused now, or None if they fit: the one wording,
    for a local batcher and for a model engine's queue seen from a worker."""
    if not state.serving:
        return ShuttingDown(f"the service is shutting down: model {model} takes no new inputs")
    if state.problem is not None:
        return ModelNotReady(f"model {model} is not ready: {state.problem}")
    if state.depth + count > state.capacity:
        return Overloaded(
            f"model {model} has {state.depth} inputs waiting (the limit is {state.capacity}): retry "
            f"after {state.retry_after_s} s",
            retry_after_s=state.retry_after_s,
        )
    return None


def count_refusal(metrics: BatcherMetrics, error: ServiceError, count: int) -> None:
    if isinstance(error, ShuttingDown):
        metrics.rejected_shutdown.inc(count)
    elif isinstance(error, Overloaded):
        metrics.rejected_overloaded.inc(count)
