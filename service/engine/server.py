"""The model engine process: the models, their batchers, and a ZeroMQ socket the workers talk to.

It knows nothing of HTTP. It loads the models like a single-process service does, then answers each
`infer` with what the model's batcher returns, so inputs from every worker share model calls. It stops
on `STOP_SIGNAL`, which the server sends once its HTTP workers have finished: the batchers finish the
call in progress and fail what still waits, and every answer is sent before the process exits.
SIGTERM and SIGINT, which a supervisor or a terminal may send to every process of the service at once,
are left to the server while it runs, so that the workers' drain still has its models; SIGTERM stops
an engine whose server has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop
import zmq

from service.config import Settings
from service.engine.channel import Channel
from service.engine.protocol import (
    ProtocolError,
    decode_inputs,
    encode_outputs,
    error_message,
    pack,
    unpack,
)
from service.engine.queue_state import QueueStateBoard, board_path, share
from service.errors import InferenceFailed, ServiceError
from service.lifecycle.control import ControlFolder
from service.lifecycle.leases import RequestScope
from service.lifecycle.manager import ModelsLifecycle, plan_versions
from service.logs import configure_logging
from service.metrics import ServiceMetrics
from service.registry import ModelRegistry
from service.tasks.base import ServedModel

logger = logging.getLogger(__name__)

RequestKey = tuple[bytes, int]
CHANGES = ("index", "load", "unload", "scan")
"""The repository calls a worker passes on to the engine."""

STOP_SIGNAL = signal.SIGUSR1
"""What the server sends the model engine once its HTTP workers have finished: answer, then exit."""


class ModelEngine:
    def __init__(self, settings: Settings, address: str) -> None:
        self.settings = settings
        self.address = address
        self._tasks: dict[RequestKey, asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()
        self._server_pid = os.getppid()

    async def run(self, on_ready: Callable[[], None]) -> None:
        assert self.settings.control_dir is not None, "the server makes the control folder first"
        folder = ControlFolder(self.settings.control_dir)
        plan = folder.read()
        metrics = ServiceMetrics(self.settings.multiprocess_dir)
        self._registry = await ModelRegistry.open(self.settings, metrics, plan_versions(plan))
        # The engine makes every change, and waits for the workers' fronts to follow it.
        self._lifecycle = ModelsLifecycle(
            self.settings, self._registry, folder, plan.generation, metrics, waits_for="front"
        )
        self._lifecycle.start_polling()
        board = self._share_queue_states()
        self._channel = Channel(zmq.ROUTER, self._on_message)
        self._channel.socket.bind(self.address)
        self._channel.start()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(STOP_SIGNAL, self._stopping.set)
        loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        on_ready()
        logger.info("the model engine listens on %s", self.address)
        await self._stopping.wait()
        await self._lifecycle.stop()
        await self._registry.close()  # queued inputs fail with 503; their answers go out below
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._channel.close(linger_ms=1000)
        if board is not None:
            board.remove()
        logger.info("the model engine stopped")

    def _share_queue_states(self) -> QueueStateBoard | None:
        """Each loaded model's queue state, on a board that the workers read to refuse a request before
        reading it (`service.engine.queue_state`)."""
        path = board_path(self.address)
        if path is None:
            logger.warning(
                "the model engine at %s shares no queue states (only one on an ipc:// socket does): the "
                "workers read every request, and the engine refuses what does not fit",
                self.address,
            )
            return None
        board = QueueStateBoard.create(path, self._registry.names())
        for name in self._registry.names():
            with contextlib.suppress(ServiceError):  # not loaded: the engine answers 503 for it
                share(board, name, self._registry.loaded(name).batcher)

        def on_served(model: ServedModel[Any, Any]) -> None:
            if board.slot(model.name) is not None:  # a model added since has none: the engine refuses
                share(board, model.name, model.batcher)

        self._registry.on_served = on_served
        return board

    def _on_sigterm(self) -> None:
        if os.getppid() == self._server_pid:
            logger.info("SIGTERM: the model engine serves on until the server's HTTP workers have finished")
            return
        logger.info("SIGTERM, and the server that started the model engine is gone: stopping")
        self._stopping.set()

    def _on_sighup(self) -> None:
        logger.info("SIGHUP: looking for new model versions")
        self._lifecycle.background(self._lifecycle.scan())

    def _on_message(self, frames: list[bytes]) -> None:
        identity, frame = frames
        try:
            message = unpack(frame)
        except ProtocolError as exc:
            logger.error("ignored a message: %s", exc)
            return
        key = (identity, int(message.get("id", 0)))
        kind = message.get("kind")
        if kind in ("infer", "state", *CHANGES):
            work = (
                self._infer(key, message) if kind == "infer"
                else self._state(key) if kind == "state"
                else self._change(key, message)
            )  # fmt: skip
            task = asyncio.get_running_loop().create_task(work)
            self._tasks[key] = task
            task.add_done_callback(lambda _: self._tasks.pop(key, None))
        elif kind == "cancel":
            if key in self._tasks:
                self._tasks[key].cancel()
        else:
            logger.error("ignored a message of unknown kind %r", kind)

    async def _state(self, key: RequestKey) -> None:
        state = {"readiness": await self._registry.readiness(), "models": await self._registry.describe()}
        self._send(key, {"kind": "state", **state})

    async def _change(self, key: RequestKey, message: dict[str, Any]) -> None:
        """A repository call that a worker passed on: the engine makes it, for every worker. A change
        once started runs to its end, even if the worker's client goes away meanwhile."""
        lifecycle, kind = self._lifecycle, message["kind"]
        work: Awaitable[Any]
        if kind == "index":
            work = lifecycle.index(bool(message.get("ready_only")))
        elif kind == "load":
            version = message.get("version")
            work = lifecycle.load(str(message["model"]), None if version is None else str(version))
        elif kind == "unload":
            work = lifecycle.unload(str(message["model"]))
        else:
            work = lifecycle.scan()
        try:
            result = await asyncio.shield(work)
            self._send(key, {"kind": "done", "result": result})
        except asyncio.CancelledError:
            return  # nobody waits for the answer; the change goes on
        except ServiceError as exc:
            self._send(key, error_message(exc))
        except Exception as exc:
            logger.exception("the model engine failed on a repository call (%s)", kind)
            self._send(key, error_message(InferenceFailed(f"the model engine failed: {exc}")))

    async def _infer(self, key: RequestKey, message: dict[str, Any]) -> None:
        try:
            with RequestScope():
                version = message.get("version")
                model = self._registry.serving(
                    str(message["model"]), None if version is None else str(version)
                )
                outputs = await model.batcher.submit_many(decode_inputs(message), message.get("timeout_s"))
            self._send(key, {"kind": "result", **encode_outputs(outputs)})
        except asyncio.CancelledError:
            return  # the worker's client went away: nobody waits for an answer
        except ServiceError as exc:
            self._send(key, error_message(exc))
        except Exception as exc:
            logger.exception("the model engine failed on a request for %s", message.get("model"))
            self._send(key, error_message(InferenceFailed(f"the model engine failed: {exc}")))

    def _send(self, key: RequestKey, message: dict[str, Any]) -> None:
        identity, request = key
        self._channel.send([identity, pack({"id": request, **message})])


def run_engine(settings: Settings, address: str, ready: Any) -> None:
    """The engine process's entry point; `ready` (a multiprocessing Event) is set once it serves."""
    configure_logging(settings.log_level, settings.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        uvloop.run(ModelEngine(settings, address).run(ready.set))
    except Exception:
        logger.exception("the model engine failed")
        raise
