"""The watch for a client that leaves (`service.routes.common.unless_disconnected`), on real asyncio tasks;
the whole app with a leaving client is in tests/app/test_service_operations.py and, with real
connections, tests/process/test_overload.py."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Awaitable, Callable

import pytest
from starlette.types import Message

from service.errors import ClientDisconnected
from service.routes.common import unless_disconnected


async def test_a_request_answered_at_once_never_watches_for_its_client_and_a_slow_one_does() -> None:
    """The watch starts only once the answer has taken `after_s`: a quick answer reads nothing more from
    the client; a slow one notices the client leave, and its work is cancelled."""
    reads = 0
    gone = asyncio.Event()

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        await gone.wait()
        return {"type": "http.disconnect"}

    assert await unless_disconnected(receive, asyncio.sleep(0, "answer"), after_s=60) == "answer"
    await asyncio.sleep(0.05)
    assert reads == 0

    work = asyncio.ensure_future(asyncio.sleep(3600))
    waiting = asyncio.ensure_future(unless_disconnected(receive, work, after_s=0.01))
    for _ in range(1000):  # the watch starts after 10 ms; a busy machine may take longer
        if reads:
            break
        await asyncio.sleep(0.01)
    assert reads == 1 and not waiting.done()  # watching, the client still there
    gone.set()
    with pytest.raises(ClientDisconnected):
        await asyncio.wait_for(waiting, 10)
    assert work.cancelled()


async def test_each_request_starts_its_watch_at_its_own_time_whatever_the_order_they_came_in() -> None:
    """The requests of a loop share one timer: a request that came later with a shorter wait is still
    watched at its time, and one whose time has not come is not watched yet."""
    reads: list[str] = []

    def receive_of(name: str) -> Callable[[], Awaitable[Message]]:
        async def receive() -> Message:
            reads.append(name)
            await asyncio.Event().wait()  # the client stays
            return {"type": "http.disconnect"}

        return receive

    patient = asyncio.ensure_future(
        unless_disconnected(receive_of("patient"), asyncio.sleep(3600), after_s=60)
    )
    await asyncio.sleep(0)
    hasty = asyncio.ensure_future(unless_disconnected(receive_of("hasty"), asyncio.sleep(3600), after_s=0.01))
    for _ in range(1000):
        if reads:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert reads == ["hasty"]
    for waiting in (patient, hasty):
        waiting.cancel()
    await asyncio.gather(patient, hasty, return_exceptions=True)


def test_an_event_loop_is_let_go_once_none_of_its_requests_waits() -> None:
    """Each loop's waiting requests are kept by the loop's key in a weak dictionary: nothing they keep
    once answered may hold the loop (a loop per test, or per app, would pile up)."""

    async def receive() -> Message:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    loops = []
    for _ in range(3):
        loop = asyncio.new_event_loop()
        assert loop.run_until_complete(unless_disconnected(receive, asyncio.sleep(0, "answer"))) == "answer"
        loop.close()
        loops.append(weakref.ref(loop))
        del loop
    gc.collect()
    assert [ref() for ref in loops] == [None, None, None]
