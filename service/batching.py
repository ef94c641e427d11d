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
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.admission import QueueState, count_refusal, refusal
from service.config import BatchSettings
from service.errors import InferenceFailed, QueueTimeout, ServiceError, ShuttingDown
from service.metrics import BatcherMetrics

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass(eq=False, slots=True)
class QueuedRequest(Generic[InputT, OutputT]):
    """One request's inputs waiting for model calls, and the future that gets all their outputs."""

    inputs: Sequence[InputT]
    future: asyncio.Future[list[OutputT]]
    queued_at: float
    deadline: float
    taken: int = 0
    """How many of `inputs` have been handed to model calls (or dropped) so far."""
    outputs: list[OutputT] = field(default_factory=list)

    @property
    def waiting(self) -> int:
        return len(self.inputs) - self.taken


# A slice of one request that goes into a model call: (request, first input, end).
Part = tuple[QueuedRequest[InputT, OutputT], int, int]


class Batcher(Generic[InputT, OutputT]):
    """Merges queued inputs into calls of `run_batch`, which gets a list and returns one output each."""

    def __init__(
        self,
        name: str,
        run_batch: Callable[[list[InputT]], Sequence[OutputT]],
        policy: BatchSettings,
        metrics: BatcherMetrics,
        probe: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self.run_batch = run_batch
        self.policy = policy
        self.metrics = metrics
        self.probe = probe
        self.problem: str | None = None
        """Why the model takes no inputs although the batcher runs: it kept failing. None: healthy."""
        self._failures = 0  # model calls in a row that failed
        self._probe_task: asyncio.Task[None] | None = None
        self._queue: collections.deque[QueuedRequest[InputT, OutputT]] = collections.deque()
        self._depth = 0  # inputs queued and not yet taken by a model call
        self._arrived = asyncio.Event()
        self._closing = False
        self._loop_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the event loop it was started in
        self._executor: ThreadPoolExecutor | None = None
        self._inputs_per_s: float | None = None  # how fast model calls drain the queue, smoothed
        # One timer for the whole queue, at the earliest deadline of a request still waiting: a timer per
        # request would be made and cancelled on every request, and most are answered long before.
        self._expiry: asyncio.TimerHandle | None = None
        self._expiry_at = math.inf
        self.on_change: Callable[[], None] | None = None
        """Called after each change of `state()`: depth, problem, closing."""

    def start(self) -> None:
        """Start the batching loop; call from the running event loop."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self.name}")
        # Kept, not asked for on every request: on Python 3.11, asking makes a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self._loop_task = self._loop.create_task(self._serve(), name=f"batcher-{self.name}")

    @property
    def queue_depth(self) -> int:
        """Inputs waiting for a model call."""
        return self._depth

    @property
    def serving(self) -> bool:
        """True while the loop runs and takes new inputs."""
        return self._loop_task is not None and not self._loop_task.done() and not self._closing

    def retry_after_s(self) -> int:
        """When a refused client may try again: the time the queue's recent drain rate needs to clear it."""
        if not self._inputs_per_s:
            return 1
        return min(60, max(1, math.ceil(self._depth / self._inputs_per_s)))

    def state(self) -> QueueState:
        return QueueState(
            self._depth, self.policy.max_queue_size, not self._closing, self.problem, self.retry_after_s()
        )

    def refusal(self, count: int = 1) -> ServiceError | None:
        """Why `count` more inputs would be refused now (nothing counted), or None if they fit."""
        if not self._closing and self.problem is None and self._depth + count <= self.policy.max_queue_size:
            return None  # the common case, on every request: no state to build
        return refusal(self.name, self.state(), count)

    def admit(self, count: int = 1) -> None:
        """Raise `ShuttingDown`, `ModelNotReady` or `Overloaded` (and count the refusal) unless `count`
        more inputs would fit in the queue now."""
        error = self.refusal(count)
        if error is not None:
            count_refusal(self.metrics, error, count)
            raise error

    def _changed(self) -> None:
        self.metrics.queue_depth.set(self._depth)
        if self.on_change is not None:
            self.on_change()

    async def submit_many(self, inputs: Sequence[InputT], timeout_s: float | None = None) -> list[OutputT]:
        """Queue every input of one request and wait for all their outputs, in order.

        Raises `Overloaded` when they do not all fit in the queue (none is queued then), `ShuttingDown`
        once the batcher is closing, `QueueTimeout` when none of them has reached a model call within
        `timeout_s` (at most the policy's queue timeout), and whatever error the model call produced.
        If the caller is cancelled, its inputs not yet computed are skipped by the loop.
        """
        self.admit(len(inputs))
        if len(inputs) == 0:
            return []
        loop = self._loop or asyncio.get_running_loop()
        now = time.monotonic()
        timeout_s = min(timeout_s or self.policy.queue_timeout_s, self.policy.queue_timeout_s)
        future: asyncio.Future[list[OutputT]] = loop.create_future()
        request = QueuedRequest(inputs, future, now, now + timeout_s)
        self._queue.append(request)
        self._depth += len(inputs)
        self._changed()
        self._arrived.set()
        # The deadline is kept to the moment, not only when the loop reaches the request.
        if request.deadline < self._expiry_at:
            self._expire_at(request.deadline)
        # Cancelling the caller cancels the future, which the loop then skips.
        return await future

    def _expire_at(self, deadline: float) -> None:
        """Look for requests past their deadline at `deadline` (a time.monotonic() time)."""
        loop = self._loop or asyncio.get_running_loop()
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry_at = deadline
        self._expiry = loop.call_at(loop.time() + deadline - time.monotonic(), self._expire_due)

    def _expire_due(self) -> None:
        """Fail each request past its deadline with all its inputs still queued; then wait for the
        earliest deadline left."""
        self._expiry, self._expiry_at = None, math.inf
        now, earliest = time.monotonic(), math.inf
        for request in list(self._queue):
            if request.taken or request.future.done():
                continue
            if request.deadline <= now:
                self._expire(request, now)
            else:
                earliest = min(earliest, request.deadline)
        if earliest < math.inf:
            self._expire_at(earliest)

    def _expire(self, request: QueuedRequest[InputT, OutputT], now: float) -> None:
        """A request whose inputs are all still queued at its deadline fails with 504, uncomputed."""
        waited = now - request.queued_at
        self.metrics.rejected_timeout.inc(request.waiting)
        self._depth -= request.waiting
        self._changed()
        request.taken = len(request.inputs)  # out of the queue's count; the loop drops the entry
        request.future.set_exception(self._timeout(waited))

    def _timeout(self, waited: float) -> QueueTimeout:
        return QueueTimeout(
            f"the input waited {waited:.1f} s for model {self.name} and reached its deadline (the queue "
            f"timeout is {self.policy.queue_timeout_s} s, or the request's X-Request-Timeout-Ms): the "
            "service is overloaded, retry later"
        )

    async def close(self) -> None:
        """Stop taking inputs, let the model call in progress finish, and fail whatever still waits."""
        self._closing = True
        self._changed()
        self._arrived.set()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._probe_task is not None:
            self._probe_task.cancel()
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
            self._changed()
        finally:
            self._fail_waiting()

    async def _waited_for_more(self) -> bool:
        """With a max_delay, wait (once) until the batch is full or its oldest input's delay is over."""
        if self.policy.max_delay_ms / 1000 <= 0 or self._depth >= self.policy.max_batch_size:
            return False
        remaining = self._queue[0].queued_at + self.policy.max_delay_ms / 1000 - time.monotonic()
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
                request.future.set_exception(self._timeout(now - request.queued_at))
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
        self._changed()
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
            self._count_failure(exc)
            return
        finally:
            self.metrics.inference_time.observe(time.monotonic() - started)
        self._failures = 0
        rate = len(inputs) / max(time.monotonic() - started, 1e-6)
        self._inputs_per_s = rate if self._inputs_per_s is None else 0.8 * self._inputs_per_s + 0.2 * rate
        offset = 0
        for request, first, end in parts:
            request.outputs.extend(outputs[offset : offset + end - first])
            offset += end - first
            if len(request.outputs) == len(request.inputs) and not request.future.done():
                request.future.set_result(request.outputs)

    def _count_failure(self, exc: Exception) -> None:
        """After `failures_before_unready` failed calls in a row, refuse inputs and probe the model."""
        self._failures += 1
        if self._failures < self.policy.failures_before_unready or self.problem is not None:
            return
        self.problem = (
            f"its last {self._failures} model calls failed (the last with: {exc}); it is probed every "
            f"{self.policy.probe_interval_s:g} s and takes inputs again once a probe succeeds"
        )
        logger.error("model %s is not ready: %s", self.name, self.problem)
        self.metrics.ready.set(0)
        self._changed()
        if self.probe is not None:
            self._probe_task = asyncio.get_running_loop().create_task(self._probe_until_healthy())

    async def _probe_until_healthy(self) -> None:
        assert self.probe is not None
        loop = asyncio.get_running_loop()
        while self.problem is not None:
            await asyncio.sleep(self.policy.probe_interval_s)
            try:
                await loop.run_in_executor(self._executor, self.probe)
            except Exception as exc:
                logger.warning("model %s still fails its probe: %s", self.name, exc)
                continue
            self.problem, self._failures = None, 0
            self.metrics.ready.set(1)
            self._changed()
            logger.info("model %s passed its probe and takes inputs again", self.name)

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
        self._changed()
