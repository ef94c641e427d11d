"""The sockets the HTTP workers accept on.

The port is bound first, before any model loads, so that an address in use stops the service at once
with a message that names it (exit 1).

With several workers on one shared socket, a burst of new connections goes to whichever worker wakes
first, and it accepts them all: 8 connections opened at once fell 8/0, 7/1 or 6/2 on two workers in 5
of 6 tries, and keep-alive connections stay where they fell, so a client with a few connections could
get one worker's throughput. Where the system has SO_REUSEPORT (Linux), each worker instead binds a
socket of its own to the port as it starts, and the kernel hashes each new connection to one of the
sockets that listen: an even split on average, whichever worker is awake. This process holds the port
meanwhile with one more such socket that never listens, so nothing else can take the port between two
workers' lives, and no connection waits in a socket that nobody accepts from (a worker's own socket
closes with it). The one cost: a connection that the kernel had queued on a worker's socket as that
worker stopped, not yet accepted, is reset rather than taken by another worker (unless the system sets
net.ipv4.tcp_migrate_req = 1, which hands it on).
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from dataclasses import dataclass
from typing import Any

from service.config import Settings

logger = logging.getLogger(__name__)


def _bind(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    bound = socket.socket(family, socket.SOCK_STREAM)
    try:
        bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            bound.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        bound.bind((host, port))
    except OSError:
        bound.close()
        raise
    return bound


def _bind_or_exit(settings: Settings) -> socket.socket:
    """A socket bound (not yet listening) to RNNSERVE_HOST and RNNSERVE_PORT, shared by nothing else;
    exits with a message that names them when they cannot be bound."""
    try:
        return _bind(settings.host, settings.port, reuse_port=False)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            sys.exit(
                f"port {settings.port} on {settings.host} is already in use: stop what uses it or set "
                "RNNSERVE_PORT (RNNSERVE_HOST) to another"
            )
        sys.exit(
            f"cannot listen on port {settings.port} on {settings.host}: {exc.strerror or exc}; set "
            "RNNSERVE_HOST to an address of this machine and RNNSERVE_PORT to a port it may use"
        )


@dataclass(frozen=True)
class WorkerSocket:
    """Stands for a socket in a spawned worker's arguments: unpickled in the worker, it is a new socket of
    the worker's own, bound to `host` and `port` with SO_REUSEPORT."""

    host: str
    port: int

    def __reduce__(self) -> tuple[Any, tuple[str, int, bool]]:
        return _bind, (self.host, self.port, True)


@dataclass
class Listening:
    """What the workers are given to accept on (`for_workers`), and the sockets this process holds."""

    for_workers: list[Any]  # socket.socket, or WorkerSocket
    held: list[socket.socket]

    def close(self) -> None:
        for held in self.held:
            held.close()


def listening(settings: Settings, workers: int) -> Listening:
    """The port bound for `workers` HTTP workers: one shared socket, or with several workers and
    SO_REUSEPORT, a socket of each worker's own (see the module's text)."""
    shared = _bind_or_exit(settings)
    host, port = shared.getsockname()[:2]
    shown = f"[{host}]" if shared.family == socket.AF_INET6 else host
    if workers > 1 and hasattr(socket, "SO_REUSEPORT"):
        shared.close()  # it was bound without SO_REUSEPORT, so nothing else held the port, ours included
        try:
            guard = _bind(settings.host, port, reuse_port=True)
        except OSError as exc:
            logger.warning("SO_REUSEPORT refused (%s): the workers share one socket", exc)
            shared = _bind_or_exit(settings.model_copy(update={"port": port}))
        else:
            logger.info("listening on http://%s:%d, a socket per worker", shown, port)
            return Listening([WorkerSocket(settings.host, port)], [guard])
    shared.set_inheritable(True)  # the HTTP workers accept on it too
    logger.info("listening on http://%s:%d", shown, port)
    return Listening([shared], [shared])
