"""The batcher on its own: deterministic batching, ordering, and an answer for every queued input.

The model here is a plain function that records the batches it gets, so each test can say exactly
which inputs went together. Nothing waits on a clock: a long `max_delay` keeps inputs pending, and a
model call blocked on an event holds the batcher busy for as long as a test needs.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from service.batching import Batcher
from service.config import BatchSettings
from service.errors import InferenceFailed, Overloaded, QueueTimeout, ServiceError, ShuttingDown
from service.metrics import ServiceMetrics

FOREVER = 3600.0


class RecordingModel:
    """Doubles its inputs and records each batch; can hold its first call until released."""

    def __init__(self, hold_first_call: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first_call:
            self.release.set()

    def __call__(self, inputs: list[int]) -> list[int]:
        self.batches.append(list(inputs))
        self.started.set()
        if len(self.batches) == 1:
            assert self.release.wait(60), "the test never released the first call"
        return [2 * x for x in inputs]


class Harness:
    def __init__(self, model: Callable[[list[int]], Sequence[int]], **policy: float) -> None:
        self.metrics = ServiceMetrics()
        settings = {"max_batch_size": 4, "max_delay_s": 0.0, "max_queue_size": 64, "queue_timeout_s": FOREVER}
        settings.update(policy)
        self.batcher: Batcher[int, int] = Batcher(
            "test",
            model,
            BatchSettings(
                max_batch_size=int(settings["max_batch_size"]),
                max_delay_ms=settings["max_delay_s"] * 1000,
                max_queue_size=int(settings["max_queue_size"]),
                queue_timeout_s=settings["queue_timeout_s"],
            ),
            self.metrics.for_batcher("test"),
        )

    def submit(self, *values: int) -> asyncio.Task[list[int]]:
        return asyncio.ensure_future(self.batcher.submit_many(list(values)))

    async def until_queued(self, depth: int) -> None:
        """Let submitted tasks run until `depth` inputs wait (they queue without awaiting anything)."""
        for _ in range(100):
            if self.batcher.queue_depth == depth:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"queue depth is {self.batcher.queue_depth}, expected {depth}")

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"model": "test", **labels})
        return 0.0 if value is None else value


@pytest.fixture
async def harness_factory() -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(model: Callable[[list[int]], Sequence[int]] | None = None, **policy: float) -> Harness:
        harness = Harness(model or RecordingModel(), **policy)
        harness.batcher.start()
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.batcher.close()


async def test_n_minus_one_inputs_stay_pending_until_the_nth_releases_all(
    harness_factory: Callable[..., Harness],
) -> None:
    model = RecordingModel()
    h = harness_factory(model, max_batch_size=4, max_delay_s=FOREVER)
    pending = [h.submit(i) for i in range(3)]
    await h.until_queued(3)
    for _ in range(20):  # give the loop every chance to dispatch early
        await asyncio.sleep(0)
    assert h.batcher.queue_depth == 3
    assert not any(task.done() for task in pending)
    assert model.batches == []

    last = h.submit(3)
    assert await asyncio.gather(*pending, last) == [[0], [2], [4], [6]]
    assert model.batches == [[0, 1, 2, 3]]
    assert h.metric("rnnserve_batch_size_count") == 1
    assert h.metric("rnnserve_batch_size_sum") == 4


async def test_a_lone_input_is_dispatched_at_once_when_the_model_is_free(
    harness_factory: Callable[..., Harness],
) -> None:
    model = RecordingModel()
    h = harness_factory(model, max_batch_size=64, max_delay_s=0.0)
    assert await asyncio.wait_for(h.submit(5), 60) == [10]
    assert model.batches == [[5]]


async def test_inputs_arriving_during_a_model_call_go_together_in_the_next(
    harness_factory: Callable[..., Harness],
) -> None:
    model = RecordingModel(hold_first_call=True)
    h = harness_factory(model, max_batch_size=8)
    first = h.submit(0)
    assert await asyncio.to_thread(model.started.wait, 60)
    rest = [h.submit(i) for i in range(1, 6)]
    await h.until_queued(5)
    model.release.set()
    assert await asyncio.gather(first, *rest) == [[0], [2], [4], [6], [8], [10]]
    assert model.batches == [[0], [1, 2, 3, 4, 5]]


async def test_batches_never_exceed_max_batch_size_and_keep_arrival_order(
    harness_factory: Callable[..., Harness],
) -> None:
    model = RecordingModel(hold_first_call=True)
    h = harness_factory(model, max_batch_size=4)
    first = h.submit(0)
    assert await asyncio.to_thread(model.started.wait, 60)
    many = h.submit(*range(1, 10))  # one request with nine inputs
    await h.until_queued(9)
    model.release.set()
    assert await first == [0]
    assert await many == [2 * i for i in range(1, 10)]
    assert model.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_a_failing_model_call_fails_its_whole_batch_and_the_batcher_goes_on(
    harness_factory: Callable[..., Harness],
) -> None:
    calls: list[list[int]] = []

    def flaky(inputs: list[int]) -> list[int]:
        calls.append(inputs)
        if len(calls) == 1:
            raise ValueError("boom")
        return inputs

    h = harness_factory(flaky, max_batch_size=4, max_delay_s=FOREVER)
    doomed = [h.submit(i) for i in range(4)]
    results = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(r, InferenceFailed) and "boom" in r.message for r in results)
    assert h.batcher.serving
    assert await asyncio.gather(*[h.submit(i) for i in range(4)]) == [[0], [1], [2], [3]]


async def test_a_model_returning_the_wrong_number_of_outputs_fails_the_batch(
    harness_factory: Callable[..., Harness],
) -> None:
    h = harness_factory(lambda inputs: inputs[:-1], max_batch_size=2, max_delay_s=FOREVER)
    results = await asyncio.gather(h.submit(1), h.submit(2), return_exceptions=True)
    assert all(isinstance(r, InferenceFailed) and "1 outputs for a batch of 2" in r.message for r in results)


async def test_cancelled_inputs_are_skipped_before_the_model_call_and_counted(
    harness_factory: Callable[..., Harness],
) -> None:
    model = RecordingModel()
    h = harness_factory(model, max_batch_size=3, max_delay_s=FOREVER)
    gone, stays = h.submit(1), h.submit(2)
    await h.until_queued(2)
    gone.cancel()
    last = h.submit(3)
    assert await asyncio.gather(stays, last) == [[4], [6]]
    assert gone.cancelled()
    assert model.batches == [[2, 3]]
    assert h.metric("rnnserve_cancelled_inputs_total") == 1


async def test_a_full_queue_refuses_whole_requests(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(max_batch_size=8, max_delay_s=FOREVER, max_queue_size=3)
    waiting = [h.submit(1), h.submit(2)]
    await h.until_queued(2)
    with pytest.raises(Overloaded, match="2 inputs waiting"):
        await h.batcher.submit_many([3, 4])  # would make 4: refused whole, nothing queued
    assert h.batcher.queue_depth == 2
    assert h.metric("rnnserve_rejected_inputs_total", reason="overloaded") == 2
    await h.batcher.close()
    for task in waiting:
        with pytest.raises(ShuttingDown):
            await task


async def test_an_input_past_its_deadline_gets_queue_timeout_without_a_model_call(
    harness_factory: Callable[..., Harness],
) -> None:
    model = RecordingModel()
    h = harness_factory(model, queue_timeout_s=0.0)  # every input is late by the time it is taken
    with pytest.raises(QueueTimeout, match=r"the queue timeout is 0\.0 s"):
        await h.submit(1)
    assert model.batches == []
    assert h.metric("rnnserve_rejected_inputs_total", reason="timeout") == 1


async def test_inputs_waiting_behind_a_model_call_fail_at_their_deadlines_while_it_runs(
    harness_factory: Callable[..., Harness],
) -> None:
    """The deadlines are kept to the moment, earliest first, whatever the order the requests came in,
    even while the model call that holds them up has not returned."""
    model = RecordingModel(hold_first_call=True)
    h = harness_factory(model, max_batch_size=4, queue_timeout_s=30.0)
    running = h.submit(1)
    assert await asyncio.to_thread(model.started.wait, 60)
    patient = asyncio.ensure_future(h.batcher.submit_many([2]))  # the queue's 30 s
    late = asyncio.ensure_future(h.batcher.submit_many([3], timeout_s=1.0))
    early = asyncio.ensure_future(h.batcher.submit_many([4], timeout_s=0.1))
    await h.until_queued(3)
    done, _ = await asyncio.wait([early], timeout=10)
    assert done and not late.done() and not patient.done()
    with pytest.raises(QueueTimeout):
        await early
    with pytest.raises(QueueTimeout):
        await asyncio.wait_for(late, 10)
    assert not running.done() and not patient.done() and h.batcher.queue_depth == 1
    assert h.metric("rnnserve_rejected_inputs_total", reason="timeout") == 2
    model.release.set()
    assert await running == [2] and await patient == [4]
    assert model.batches == [[1], [2]]


async def test_close_finishes_the_running_call_and_fails_the_waiting_inputs(
    harness_factory: Callable[..., Harness],
) -> None:
    model = RecordingModel(hold_first_call=True)
    h = harness_factory(model, max_batch_size=4)
    running = h.submit(1)
    assert await asyncio.to_thread(model.started.wait, 60)
    waiting = h.submit(2)
    await h.until_queued(1)
    closing = asyncio.ensure_future(h.batcher.close())
    await asyncio.sleep(0)
    assert not h.batcher.serving
    with pytest.raises(ShuttingDown):
        await h.batcher.submit_many([3])
    model.release.set()
    await closing
    assert await running == [2]
    with pytest.raises(ShuttingDown, match="shut down before"):
        await waiting
    assert model.batches == [[1]]
    assert h.batcher.queue_depth == 0


async def test_every_input_gets_exactly_one_answer_whatever_happens(
    harness_factory: Callable[..., Harness],
) -> None:
    """Random request sizes, cancellations and model failures, then a shutdown: no input is left
    waiting, and each one that was not cancelled ends with its output or a service error."""
    rng = random.Random(0)

    def sometimes_failing(inputs: list[int]) -> list[int]:
        if rng.random() < 0.2:
            raise RuntimeError("model failure")
        return [2 * x for x in inputs]

    h = harness_factory(sometimes_failing, max_batch_size=5, max_queue_size=10_000)
    tasks: list[tuple[list[int], asyncio.Task[list[int]]]] = []
    for round_ in range(40):
        for _ in range(rng.randint(1, 6)):
            values = [rng.randint(0, 100) for _ in range(rng.randint(1, 4))]
            tasks.append((values, h.submit(*values)))
        for _, task in rng.sample(tasks, k=min(2, len(tasks))):
            if rng.random() < 0.3:
                task.cancel()
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
        if round_ == 30:
            await asyncio.sleep(0.01)  # let some batches run in the worker thread
    await h.batcher.close()
    results = await asyncio.gather(*(task for _, task in tasks), return_exceptions=True)
    for (values, task), result in zip(tasks, results, strict=True):
        assert task.done()
        if task.cancelled():
            continue
        assert result == [2 * v for v in values] or isinstance(result, ServiceError), result
    assert h.batcher.queue_depth == 0
