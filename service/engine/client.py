"""An HTTP worker's side of the model engine: one client for the channel, and the registry and queues
that the routes use in place of local models, which refuse a request before it is read on the engine's
shared queue state (`service.engine.queue_state`)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import zmq

from service.admission import count_refusal, refusal
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
from service.engine.queue_state import QueueStateBoard, board_path
from service.errors import ModelNotReady, ServiceError
from service.loading import locate_for
from service.metrics import BatcherMetrics, ServiceMetrics
from service.registry import ServedModels
from service.repository import ModelLoadError
from service.tasks.base import ServedModel

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


class RemoteAdmission:
    """Admission for a model whose queue is in the engine, from the queue-state board.

    Each `refusal` reads the engine's queue state from the board (about 2 µs) and judges it by
    `service.admission.refusal`, so a worker refuses as the engine's batcher would, before the
    request's body is read: the same errors and wording and the engine's Retry-After. The board is
    behind the engine by at most the inputs in transit to it (see `service.engine.queue_state`); what
    is admitted beyond the limit, the engine's queue refuses.
    """

    def __init__(self, model: str, board: QueueStateBoard, slot: int, metrics: BatcherMetrics) -> None:
        self.model = model
        self._board = board
        self._slot = slot
        self._metrics = metrics

    def refusal(self, count: int = 1) -> ServiceError | None:
        state = self._board.read(self._slot)
        return None if state is None else refusal(self.model, state, count)

    def admit(self, count: int = 1) -> None:
        error = self.refusal(count)
        if error is not None:
            count_refusal(self._metrics, error, count)
            raise error


def refusal_metrics(metrics: ServiceMetrics, model: str) -> BatcherMetrics:
    """The metrics of a batcher that only admits: its refusals count under `model`, summed with the
    engine's. The metrics of queues and model calls are left unlabelled, so that using one fails
    loudly rather than report what this process never does (a labelled `ready` would also pull the
    model's readiness, the minimum over every process, down to 0)."""
    return BatcherMetrics(
        batch_size=metrics.batch_size,
        queue_depth=metrics.queue_depth,
        queue_wait=metrics.queue_wait,
        inference_time=metrics.inference_time,
        cancelled=metrics.cancelled,
        rejected_overloaded=metrics.rejected.labels(model, "overloaded"),
        rejected_timeout=metrics.rejected,
        rejected_shutdown=metrics.rejected.labels(model, "shutdown"),
        ready=metrics.model_ready,
    )


def open_board(address: str) -> QueueStateBoard | None:
    """The queue-state board of the engine at `address`; None, with a warning, if it shares none."""
    path = board_path(address)
    try:
        return QueueStateBoard.open(path) if path is not None else None
    except FileNotFoundError:
        logger.warning(
            "no queue-state board at %s: is the model engine running? Every request is read and sent, "
            "and the engine refuses what does not fit",
            path,
        )
        return None


class RemoteQueue:
    """A model's queue in the engine: `admit` and `submit_many` as a local batcher has them."""

    def __init__(
        self,
        client: EngineClient,
        model: str,
        version: str,
        timeout_s: float,
        admission: RemoteAdmission | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.version = version
        self.timeout_s = timeout_s
        self.admission = admission

    def refusal(self, count: int = 1) -> ServiceError | None:
        """Why the engine's queue would refuse `count` more inputs now, as its shared state shows it;
        None if they fit, or without that state (the engine's queue decides, once they are sent)."""
        return None if self.admission is None else self.admission.refusal(count)

    def admit(self, count: int = 1) -> None:
        """Refuse a request now (and count it), before its body is read, if the engine's queue would."""
        if self.admission is not None:
            self.admission.admit(count)

    async def submit_many(
        self, inputs: Sequence[np.ndarray], timeout_s: float | None = None
    ) -> list[np.ndarray]:
        message = {
            "kind": "infer",
            "model": self.model,
            "version": self.version,
            "timeout_s": timeout_s,
            **encode_inputs(inputs),
        }
        answer = await self.client.request(message, self.timeout_s)
        if answer.get("kind") == "error":
            raise_error(answer)
        return decode_outputs(answer)


CHANGE_TIMEOUT_S = 600.0
"""How long a worker waits for the model engine to make a repository change: load, warm up, and wait
for every worker to switch."""


class EngineRepository:
    """The repository calls of an HTTP worker, made by the model engine, which runs the models."""

    def __init__(self, client: EngineClient) -> None:
        self.client = client

    async def _ask(self, message: dict[str, Any], timeout_s: float = CHANGE_TIMEOUT_S) -> Any:
        answer = await self.client.request(message, timeout_s)
        if answer.get("kind") == "error":
            raise_error(answer)
        return answer["result"]

    async def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        index: list[dict[str, str]] = await self._ask(
            {"kind": "index", "ready_only": ready_only}, STATE_TIMEOUT_S
        )
        return index

    async def load(self, name: str, version: str | None) -> dict[str, Any]:
        result: dict[str, Any] = await self._ask({"kind": "load", "model": name, "version": version})
        return result

    async def unload(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._ask({"kind": "unload", "model": name})
        return result

    async def scan(self) -> list[str]:
        changed: list[str] = await self._ask({"kind": "scan"})
        return changed


class RemoteRegistry(ServedModels):
    """The registry of an HTTP worker whose models run in the model engine.

    The worker reads each model's metadata itself, to check inputs and build answers as a
    single-process service does; readiness and the models' description come from the engine. Each
    front names the version it was made for in its requests, and the engine runs that version.
    """

    def __init__(self, settings: Settings, client: EngineClient, metrics: ServiceMetrics) -> None:
        super().__init__(settings)
        self.client = client
        self._metrics = metrics
        self._board = open_board(settings.engine_address)
        # An answer can wait in the engine's queue for up to queue_timeout_s, then take one model call.
        self._timeout_s = settings.queue_timeout_s + 60.0

    @classmethod
    async def open(
        cls,
        settings: Settings,
        metrics: ServiceMetrics | None = None,
        versions: dict[str, str | None] | None = None,
    ) -> RemoteRegistry:
        """The worker's fronts for the engine's models, at the version `versions` names (None:
        unloaded); `metrics` (the app's, else a set of its own) count the requests this worker refuses
        before reading them."""
        client = EngineClient(settings.engine_address)
        client.start()
        registry = cls(settings, client, metrics or ServiceMetrics(settings.multiprocess_dir))
        for name, version in registry._to_load(versions):
            with contextlib.suppress(ModelLoadError):  # kept for the routes
                registry.swap(await registry.front(name, version))
        return registry

    async def front(self, name: str, version: str | None) -> ServedModel[Any, Any]:
        """A front for version `version` of model `name`, its metadata read and verified here."""
        try:
            served, artifact = await asyncio.to_thread(
                locate_for, self.kind(name), name, self._settings, version
            )
        except ModelLoadError as exc:
            if name not in self._models:
                self._failed(name, str(exc))
            raise
        slot = self._board.slot(name) if self._board is not None else None
        admission = None
        if self._board is not None and slot is not None:
            admission = RemoteAdmission(name, self._board, slot, refusal_metrics(self._metrics, name))
        queue = RemoteQueue(self.client, name, artifact.version, self._timeout_s, admission)
        return served.remote(artifact, self._settings.batching_for(name), queue)

    def swap(self, model: ServedModel[Any, Any]) -> ServedModel[Any, Any] | None:
        """Answer with `model` from now on; the front it replaces, which its requests still hold."""
        return self._served(model)

    def unload(self, name: str) -> ServedModel[Any, Any] | None:
        return self._unserved(name)

    async def _state(self) -> dict[str, Any] | None:
        try:
            return await self.client.request({"kind": "state"}, STATE_TIMEOUT_S)
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
        await self.client.close()
