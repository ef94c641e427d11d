"""An HTTP worker's side of the model engine: one client for the channel, and the registry and queues
that the routes use in place of local models."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from service.config import Settings
from service.engine.channel import Channel
from service.engine.protocol import (
    ProtocolError,
    decode_outputs,
    encode_inputs,
    pack,
    raise_error,
    unpack,
)
from service.errors import ModelNotReady
from service.registry import ServedModels, locate_for
from service.repository import ModelLoadError

logger = logging.getLogger(__name__)

STATE_TIMEOUT_S = 5.0


class EngineClient:
    """Requests to the model engine and their answers, over one ZeroMQ DEALER socket."""

    def __init__(self, address: str) -> None:
        self._channel = Channel(zmq.DEALER, self._on_message)
        self._channel.socket.connect(address)
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}

    def start(self) -> None:
        self._channel.start()

    async def close(self) -> None:
        self._channel.close(linger_ms=0)

    async def request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one message and wait for its answer. If the caller is cancelled, the engine is told."""
        request = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request] = answer
        timer = asyncio.get_running_loop().call_later(timeout_s, self._time_out, answer, timeout_s)
        try:
            self._channel.send([pack({"id": request, **message})])
            return await answer
        except asyncio.CancelledError:
            self._channel.send([pack({"id": request, "kind": "cancel"})])
            raise
        finally:
            timer.cancel()
            del self._waiting[request]

    @staticmethod
    def _time_out(answer: asyncio.Future[dict[str, Any]], timeout_s: float) -> None:
        if not answer.done():
            answer.set_exception(
                ModelNotReady(
                    f"the model engine did not answer within {timeout_s:g} s: the service is unhealthy"
                )
            )

    def _on_message(self, frames: list[bytes]) -> None:
        try:
            message = unpack(frames[0])
        except ProtocolError as exc:
            logger.error("ignored a message from the model engine: %s", exc)
            return
        answer = self._waiting.get(int(message.get("id", 0)))
        if answer is not None and not answer.done():
            answer.set_result(message)


class RemoteQueue:
    """A model's queue in the engine: `submit_many` as a local batcher has it."""

    def __init__(self, client: EngineClient, model: str, timeout_s: float) -> None:
        self.client = client
        self.model = model
        self.timeout_s = timeout_s

    def admit(self) -> None:
        """The engine's queue decides, once the request is read and sent."""

    async def submit_many(
        self, inputs: Sequence[np.ndarray], timeout_s: float | None = None
    ) -> list[np.ndarray]:
        message = {"kind": "infer", "model": self.model, "timeout_s": timeout_s, **encode_inputs(inputs)}
        answer = await self.client.request(message, self.timeout_s)
        if answer.get("kind") == "error":
            raise_error(answer)
        return decode_outputs(answer)


class RemoteRegistry(ServedModels):
    """The registry of an HTTP worker whose models run in the model engine.

    The worker reads each model's metadata itself, to check inputs and build answers as a
    single-process service does; readiness and the models' description come from the engine.
    """

    def __init__(self, settings: Settings, client: EngineClient) -> None:
        super().__init__(settings)
        self._client = client

    @classmethod
    async def open(cls, settings: Settings) -> RemoteRegistry:
        client = EngineClient(settings.engine_address)
        client.start()
        registry = cls(settings, client)
        # An answer can wait in the engine's queue for up to queue_timeout_s, then take one model call.
        timeout_s = settings.queue_timeout_s + 60.0
        for kind, name in registry._kinds:
            try:
                served, artifact = await asyncio.to_thread(locate_for, kind, name, settings)
                queue = RemoteQueue(client, name, timeout_s)
                registry._served(served.remote(artifact, settings.batching_for(name), queue))
            except ModelLoadError as exc:
                registry._problems[name] = str(exc)
        return registry

    async def _state(self) -> dict[str, Any] | None:
        try:
            return await self._client.request({"kind": "state"}, STATE_TIMEOUT_S)
        except ModelNotReady:
            return None

    async def readiness(self) -> dict[str, str]:
        state = await self._state()
        if state is None:
            return {name: "the model engine does not answer" for name in self.names()}
        readiness: dict[str, str] = state["readiness"]
        return readiness

    async def describe(self) -> list[dict[str, Any]]:
        state = await self._state()
        if state is None:
            return [{"name": n, "ready": False, "problem": "the model engine does not answer"}
                    for n in self.names()]  # fmt: skip
        models: list[dict[str, Any]] = state["models"]
        return models

    async def close(self) -> None:
        await self._client.close()
