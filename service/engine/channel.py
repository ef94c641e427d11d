"""A ZeroMQ socket driven by the asyncio event loop, without a future per message.

ZeroMQ signals its file descriptor on an edge: when it becomes readable, every message waiting is
taken at once (never blocking), and since a send may take in new messages too, each send is followed
by a look for them. Sends never block and never drop: the socket's queues are unbounded, and the
batchers' queue limits bound what can be in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import zmq


class Channel:
    def __init__(self, kind: int, on_message: Callable[[list[bytes]], None]) -> None:
        self._context = zmq.Context()
        self.socket: zmq.Socket[bytes] = self._context.socket(kind)
        self.socket.setsockopt(zmq.SNDHWM, 0)
        self.socket.setsockopt(zmq.RCVHWM, 0)
        self._on_message = on_message
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Deliver messages to `on_message` from now on; call from the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.socket.FD, self._take_waiting)
        self._loop.call_soon(self._take_waiting)

    def send(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames, zmq.NOBLOCK)
        if self._loop is not None and int(self.socket.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self._loop.call_soon(self._take_waiting)

    def _take_waiting(self) -> None:
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_message(frames)

    def close(self, linger_ms: int) -> None:
        if self._loop is not None and not self.socket.closed:
            self._loop.remove_reader(self.socket.FD)
        self.socket.close(linger=linger_ms)
        self._context.term()
