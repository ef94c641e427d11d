"""The watch for a client that leaves (`service.routes.common.unless_disconnected`), on real asyncio tasks;
the whole app with a leaving client is in tests/app/test_service_operations.py and, with real
connections, tests/process/test_overload.py."""

from __future__ import annotations

import asyncio

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
