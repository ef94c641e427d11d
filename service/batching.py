"""Dynamic batching: inputs waiting for the same model are merged into one model call.

One `Batcher` per model. Requests put ready-to-stack inputs in its queue and await their futures; a
single loop takes up to `max_batch_size` inputs at a time and runs the model on them in the batcher's
own worker thread, so the event loop never waits for the model.

When the model is free, an input is dispatched at once (no added latency when idle). While a model
call runs, new inputs accumulate and go together in the next call. `max_delay_ms` (default 0) may
add a short wait for a batch to fill, counted from the arrival of its oldest input.

Every queued future is resolved exactly once, on every path: with its output, with the model's
error, with `QueueTimeout` when it waited too long, or with `ShuttingDown`. Futures cancelled by
their request (the client went away) are skipped before the batch is built, and counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from service.errors import InferenceFailed, Overloaded, QueueTimeout, ShuttingDown
from service.metrics import BatcherMetrics

logger = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass(eq=False)
class QueuedInput(Generic[InputT, OutputT]):
    """One input waiting for a model call."""

    tensor: InputT
    future: asyncio.Future[OutputT]
    queued_at: float
    deadline: float


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int
    max_delay_s: float
    max_queue_size: int
    queue_timeout_s: float


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
        self._queue: collections.deque[QueuedInput[InputT, OutputT]] = collections.deque()
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
        return len(self._queue)

    @property
    def serving(self) -> bool:
        """True while the loop runs and takes new inputs."""
        return self._loop_task is not None and not self._loop_task.done() and not self._closing

    async def submit_many(self, tensors: Sequence[InputT]) -> list[OutputT]:
        """Queue every input of one request and wait for all their outputs, in order.

        Raises `Overloaded` when they do not all fit in the queue (none is queued then), `ShuttingDown`
        once the batcher is closing, and whatever error the model call or the queue produced. If the
        caller is cancelled, its queued inputs are cancelled too and skipped by the loop.
        """
        if self._closing:
            self.metrics.rejected_shutdown.inc(len(tensors))
            raise ShuttingDown(f"the service is shutting down: model {self.name} takes no new inputs")
        if len(self._queue) + len(tensors) > self.policy.max_queue_size:
            self.metrics.rejected_overloaded.inc(len(tensors))
            raise Overloaded(
                f"model {self.name} has {len(self._queue)} inputs waiting (the limit is "
                f"{self.policy.max_queue_size}): retry shortly"
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures: list[asyncio.Future[OutputT]] = []
        for tensor in tensors:
            future: asyncio.Future[OutputT] = loop.create_future()
            self._queue.append(QueuedInput(tensor, future, now, now + self.policy.queue_timeout_s))
            futures.append(future)
        self.metrics.queue_depth.set(len(self._queue))
        self._arrived.set()
        # Cancelling the gather cancels every future in it, which the loop then skips.
        return list(await asyncio.gather(*futures))

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
        if self.policy.max_delay_s <= 0 or len(self._queue) >= self.policy.max_batch_size:
            return False
        remaining = self._queue[0].queued_at + self.policy.max_delay_s - time.monotonic()
        if remaining <= 0:
            return False
        self._arrived.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), remaining)
        return True

    def _take_batch(self) -> list[QueuedInput[InputT, OutputT]]:
        batch: list[QueuedInput[InputT, OutputT]] = []
        now = time.monotonic()
        while self._queue and len(batch) < self.policy.max_batch_size:
            item = self._queue.popleft()
            if item.future.cancelled():
                self.metrics.cancelled.inc()
            elif now >= item.deadline:
                self.metrics.rejected_timeout.inc()
                waited = now - item.queued_at
                self._fail(
                    item,
                    QueueTimeout(
                        f"the input waited {waited:.1f} s for model {self.name} (the limit is "
                        f"{self.policy.queue_timeout_s} s): the service is overloaded, retry later"
                    ),
                )
            else:
                batch.append(item)
        self.metrics.queue_depth.set(len(self._queue))
        return batch

    async def _run(self, batch: list[QueuedInput[InputT, OutputT]]) -> None:
        started = time.monotonic()
        for item in batch:
            self.metrics.queue_wait.observe(started - item.queued_at)
        self.metrics.batch_size.observe(len(batch))
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self.run_batch, [i.tensor for i in batch])
            if len(outputs) != len(batch):
                raise RuntimeError(f"it returned {len(outputs)} outputs for a batch of {len(batch)} inputs")
        except asyncio.CancelledError:
            for item in batch:
                self._fail(item, ShuttingDown(f"model {self.name} was stopped mid-call"))
            raise
        except Exception as exc:
            logger.exception("model %s failed on a batch of %d inputs", self.name, len(batch))
            for item in batch:
                self._fail(item, InferenceFailed(f"model {self.name} failed: {exc}"))
            return
        finally:
            self.metrics.inference_time.observe(time.monotonic() - started)
        for item, output in zip(batch, outputs, strict=True):
            if not item.future.done():
                item.future.set_result(output)

    @staticmethod
    def _fail(item: QueuedInput[InputT, OutputT], error: Exception) -> None:
        if not item.future.done():  # done: cancelled by its request in the meantime
            item.future.set_exception(error)

    def _fail_waiting(self) -> None:
        while self._queue:
            item = self._queue.popleft()
            if item.future.cancelled():
                self.metrics.cancelled.inc()
            elif not item.future.done():
                self.metrics.rejected_shutdown.inc()
                item.future.set_exception(
                    ShuttingDown(f"the service shut down before model {self.name} ran this input")
                )
        self.metrics.queue_depth.set(0)
