"""Dynamic batching: inputs waiting for the same model are merged into one model call.

One `Batcher` per model. A request puts its ready-to-stack inputs in the queue as one entry with one
future, and awaits it; a single loop takes up to `max_batch_size` inputs at a time, from as many
entries as it needs (a long request may be split over several calls), and runs the model on them in
the batcher's own worker thread, so the event loop never waits for the model.

When the model is free, an input is dispatched at once (no added latency when idle). While a model
call runs, new inputs accumulate and go together in the next call. `max_delay_ms` (default 0) may
add a short wait for a batch to fill, counted from the arrival of its oldest input.

Every queued future is resolved exactly once, on every path: with its outputs, with the model's
error, with `QueueTimeout` when it waited too long, or with `ShuttingDown`. Futures cancelled by
their request (the client went away) are skipped before the batch is built, and their inputs counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.errors import InferenceFailed, Overloaded, QueueTimeout, ShuttingDown
from service.metrics import BatcherMetrics

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass(eq=False)
class QueuedRequest(Generic[InputT, OutputT]):
    """One request's inputs waiting for model calls, and the future that gets all their outputs."""

    inputs: Sequence[InputT]
    future: asyncio.Future[list[OutputT]]
    queued_at: float
    deadline: float
    taken: int = 0
    """How many of `inputs` have been handed to model calls so far."""
    outputs: list[OutputT] = field(default_factory=list)

    @property
    def waiting(self) -> int:
        return len(self.inputs) - self.taken


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int
    max_delay_s: float
    max_queue_size: int
    queue_timeout_s: float


# A slice of one request that goes into a model call: (request, first input, end).
Part = tuple[QueuedRequest[InputT, OutputT], int, int]


class Batcher(Generic[InputT, OutputT]):
    """Merges queued inputs into calls of `run_batch`, which gets a list and returns one output each."""

    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[InputT]], Sequence[OutputT]],
        policy: BatchPolicy,
        metrics: BatcherMetrics,
    ) -> None:
        self.name = name
        self.run_batch = run_batch
        self.policy = policy
        self.metrics = metrics
        self._queue: collections.deque[QueuedRequest[InputT, OutputT]] = collections.deque()
        self._depth = 0  # inputs queued and not yet taken by a model call
        self._arrived = asyncio.Event()
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Start the batching loop; call from the running event loop."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self.name}")
        self._loop_task = asyncio.get_running_loop().create_task(self._serve(), name=f"batcher-{self.name}")

    @property
    def queue_depth(self) -> int:
        """Inputs waiting for a model call."""
        return self._depth

    @property
    def serving(self) -> bool:
        """True while the loop runs and takes new inputs."""
        return self._loop_task is not None and not self._loop_task.done() and not self._closing

    async def submit_many(self, inputs: Sequence[InputT]) -> list[OutputT]:
        """Queue every input of one request and wait for all their outputs, in order.

        Raises `Overloaded` when they do not all fit in the queue (none is queued then), `ShuttingDown`
        once the batcher is closing, and whatever error the model call or the queue produced. If the
        caller is cancelled, its inputs not yet computed are skipped by the loop.
        """
        if self._closing:
            self.metrics.rejected_shutdown.inc(len(inputs))
            raise ShuttingDown(f"the service is shutting down: model {self.name} takes no new inputs")
        if self._depth + len(inputs) > self.policy.max_queue_size:
            self.metrics.rejected_overloaded.inc(len(inputs))
            raise Overloaded(
                f"model {self.name} has {self._depth} inputs waiting (the limit is "
                f"{self.policy.max_queue_size}): retry shortly"
            )
        if len(inputs) == 0:
            return []
        now = time.monotonic()
        future: asyncio.Future[list[OutputT]] = asyncio.get_running_loop().create_future()
        self._queue.append(QueuedRequest(inputs, future, now, now + self.policy.queue_timeout_s))
        self._depth += len(inputs)
        self.metrics.queue_depth.set(self._depth)
        self._arrived.set()
        # Cancelling the caller cancels the future, which the loop then skips.
        return await future

    async def close(self) -> None:
        """Stop taking inputs, let the model call in progress finish, and fail whatever still waits."""
        self._closing = True
        self._arrived.set()
        if self._loop_task is not None:
            await self._loop_task
        self._fail_waiting()
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def _serve(self) -> None:
        try:
            while not self._closing:
                if not self._queue:
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                if await self._waited_for_more():
                    continue
                batch = self._take_batch()
                if batch:
                    await self._run(batch)
        except Exception:
            # A bug, not a model error (those are the batch's answers): stop taking inputs rather
            # than leave them waiting for a loop that is gone.
            logger.exception("the batching loop of model %s failed; it takes no more inputs", self.name)
            self._closing = True
        finally:
            self._fail_waiting()

    async def _waited_for_more(self) -> bool:
        """With a max_delay, wait (once) until the batch is full or its oldest input's delay is over."""
        if self.policy.max_delay_s <= 0 or self._depth >= self.policy.max_batch_size:
            return False
        remaining = self._queue[0].queued_at + self.policy.max_delay_s - time.monotonic()
        if remaining <= 0:
            return False
        self._arrived.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), remaining)
        return True

    def _take_batch(self) -> list[Part[InputT, OutputT]]:
        parts: list[Part[InputT, OutputT]] = []
        room = self.policy.max_batch_size
        now = time.monotonic()
        while self._queue and room:
            request = self._queue[0]
            if request.future.done():  # cancelled by its client, or failed by an earlier part
                self._drop(request)
                if request.future.cancelled():
                    self.metrics.cancelled.inc(request.waiting)
                continue
            if request.taken == 0 and now >= request.deadline:
                self._drop(request)
                self.metrics.rejected_timeout.inc(request.waiting)
                request.future.set_exception(
                    QueueTimeout(
                        f"the input waited {now - request.queued_at:.1f} s for model {self.name} (the "
                        f"limit is {self.policy.queue_timeout_s} s): the service is overloaded, retry later"
                    )
                )
                continue
            if request.taken == 0:
                self.metrics.queue_wait.observe(now - request.queued_at)
            count = min(room, request.waiting)
            parts.append((request, request.taken, request.taken + count))
            request.taken += count
            self._depth -= count
            room -= count
            if not request.waiting:
                self._queue.popleft()
        self.metrics.queue_depth.set(self._depth)
        return parts

    def _drop(self, request: QueuedRequest[InputT, OutputT]) -> None:
        """Remove the request at the head of the queue, with its inputs not yet taken."""
        self._queue.popleft()
        self._depth -= request.waiting

    async def _run(self, parts: list[Part[InputT, OutputT]]) -> None:
        started = time.monotonic()
        inputs = [x for request, first, end in parts for x in request.inputs[first:end]]
        self.metrics.batch_size.observe(len(inputs))
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self.run_batch, inputs)
            if len(outputs) != len(inputs):
                raise RuntimeError(f"it returned {len(outputs)} outputs for a batch of {len(inputs)} inputs")
        except asyncio.CancelledError:
            for request, _, _ in parts:
                self._fail(request, ShuttingDown(f"model {self.name} was stopped mid-call"))
            raise
        except Exception as exc:
            logger.exception("model %s failed on a batch of %d inputs", self.name, len(inputs))
            for request, _, _ in parts:
                self._fail(request, InferenceFailed(f"model {self.name} failed: {exc}"))
            return
        finally:
            self.metrics.inference_time.observe(time.monotonic() - started)
        offset = 0
        for request, first, end in parts:
            request.outputs.extend(outputs[offset : offset + end - first])
            offset += end - first
            if len(request.outputs) == len(request.inputs) and not request.future.done():
                request.future.set_result(request.outputs)

    @staticmethod
    def _fail(request: QueuedRequest[InputT, OutputT], error: Exception) -> None:
        if not request.future.done():  # done: cancelled by its request in the meantime
            request.future.set_exception(error)

    def _fail_waiting(self) -> None:
        while self._queue:
            request = self._queue.popleft()
            if request.future.cancelled():
                self.metrics.cancelled.inc(request.waiting)
            elif not request.future.done():
                self.metrics.rejected_shutdown.inc(request.waiting)
                request.future.set_exception(
                    ShuttingDown(f"the service shut down before model {self.name} ran this input")
                )
        self._depth = 0
        self.metrics.queue_depth.set(0)
