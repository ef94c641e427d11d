"""A shutdown that loses nothing: SIGTERM starts a drain before the server stops.

1. SIGTERM: `/health/ready` answers 503 at once, so load balancers stop sending; every answer carries
   `Connection: close`, so clients stop reusing their connections here.
2. After `RNNSERVE_DRAIN_S`, the server (uvicorn) shuts down as usual: it stops accepting
   connections, answers every request it has received, and waits up to `RNNSERVE_SHUTDOWN_TIMEOUT_S`
   for them; only what is still queued then is answered 503. The process exits 0.
A SIGTERM that arrives while the server drains or stops changes nothing. A supervisor that signals
every process of the service (systemd's KillMode=control-group, `kill -TERM -PGID`) reaches each HTTP
worker twice, directly and through the process manager, and the drain still runs its course.
SIGINT (Ctrl-C) stops at once, as uvicorn does: the rest of the drain is skipped, the requests in
flight are answered, and a second SIGINT abandons them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

ARRIVAL_GRACE_S = 0.5
"""After the listening sockets close: time for a request on a connection just accepted to arrive."""


class Drain:
    def __init__(self, drain_s: float) -> None:
        self.drain_s = drain_s
        self.draining = False

    def take_over_sigterm(self) -> None:
        """Handle SIGTERM with a drain first, and only the first SIGTERM. Call from the app factory,
        which uvicorn runs in its event loop once it handles the signals: the handler this replaces is
        the server's own, whose server then stops after the drain."""
        server: Any = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
        if not hasattr(server, "should_exit"):
            return  # not under uvicorn's signal handling (e.g. a test's ASGI client): nothing to drain
        loop = asyncio.get_running_loop()

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self.draining or server.should_exit:
                logger.info("SIGTERM while %s: ignored", "draining" if self.draining else "stopping")
                return
            self.draining = True
            logger.info("SIGTERM: draining for %g s (not ready, Connection: close)", self.drain_s)
            loop.call_soon_threadsafe(loop.call_later, self.drain_s, self._stop_accepting, server, loop)

        signal.signal(signal.SIGTERM, on_sigterm)

    def _stop_accepting(self, server: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Close the listening sockets, then let the requests on connections already accepted arrive
        before uvicorn's shutdown closes every connection that holds no request."""
        logger.info("drained for %g s: no new connections; answering those in flight", self.drain_s)
        for listening in getattr(server, "servers", []):
            listening.close()
        # Setting should_exit, rather than calling the server's handler, keeps the exit status 0.
        loop.call_later(ARRIVAL_GRACE_S, setattr, server, "should_exit", True)
