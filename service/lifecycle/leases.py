"""Which models the requests in flight use, so that a model swapped out or unloaded is let go only
once no request uses it.

Each prediction request runs in a `RequestScope`; every model the registry hands it in that scope
is held until the request is answered. A model taken out of service keeps its queue and its runtime
until `Leases.idle()`: the requests that had already chosen it (reading their body, waiting in its
queue, in its model call) finish on it, and none is refused because it changed.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

_held: ContextVar[list[Leases] | None] = ContextVar("rnnserve_held_models", default=None)


class Leases:
    """How many requests hold one model."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def take(self) -> None:
        self.count += 1
        self._idle.clear()

    def give_back(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no request holds the model."""
        await self._idle.wait()


class RequestScope:
    """Hold every model looked up inside, until the scope ends (`with RequestScope(): ...`). A class, not
    a generator made a context manager: on every request, that costs 1 µs more."""

    __slots__ = ("_held", "_token")

    def __enter__(self) -> None:
        self._held: list[Leases] = []
        self._token = _held.set(self._held)

    def __exit__(self, *exc_info: object) -> None:
        _held.reset(self._token)
        for leases in self._held:
            leases.give_back()


def hold(leases: Leases) -> None:
    """Hold a model for the request in scope, if any (a lookup outside one, e.g. a GET, holds nothing)."""
    held = _held.get()
    if held is not None:
        leases.take()
        held.append(leases)
