"""What the prediction routes share: waiting for an answer while watching the client."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

from service.errors import ClientDisconnected, InvalidInput

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    """Return once the client has gone (the body must have been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Await `work`, but cancel it, and so its queued inputs, if the client goes away first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            raise ClientDisconnected()
        return task.result()
    finally:
        task.cancel()
        watcher.cancel()


def check_count(count: int, limit: int) -> None:
    if count > limit:
        raise InvalidInput(
            f"inputs: has {count} entries; at most {limit} per request (RNNSERVE_MAX_INPUTS_PER_REQUEST): "
            "split them over several requests"
        )
