"""Running the service: one process, or several HTTP workers with their models inline or in a model
engine.

The port is bound first, before any model loads, so that an address in use stops the service at once
with a message that names it (exit 1); `service.sockets` says how the workers share it.
- One worker, models inline: uvicorn serves the app in this process.
- `RNNSERVE_WORKERS=N`: uvicorn's process manager runs N workers on that port.
  - `RNNSERVE_ENGINE=inline`: each worker loads the models and batches its own requests.
  - `RNNSERVE_ENGINE=process`: this process first starts the model engine (`service.engine`), and the
    workers send it their inputs, so batches form across all workers. The engine outlives the
    workers: on SIGTERM they drain and finish their requests first, then the engine stops. If the
    engine dies, the whole service stops (exit 1) for its supervisor to restart it.
SIGTERM drains the same way whether it reaches this process alone or every process of the service at
once (`kill -TERM -PGID`, systemd's KillMode=control-group): see `service.drain`.
With several processes, every process writes its metrics into one scratch folder and any worker's
`/metrics` shows their sum.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import threading
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from service import sockets
from service.app import create_app
from service.config import Settings
from service.drain import Drain
from service.engine.server import STOP_SIGNAL, run_engine
from service.lifecycle.control import ControlFolder
from service.lifecycle.manager import initial_plan
from service.loading import model_kinds
from service.logs import configure_logging
from service.runtimes import gpu_available

ENGINE_STOP_MARGIN_S = 5.0
"""Once the workers are gone: how much longer than the shutdown timeout the model engine gets to exit."""

logger = logging.getLogger(__name__)

ENGINE_START_TIMEOUT_S = 300.0

YOUNG_COLLECTION_EVERY = 7_000
"""Objects made, less those freed, between two collections of the youngest ones in a serving process
(Python's default: 700). A request makes hundreds of short-lived objects, so at the default a
collection ran every few requests, about 7 % of the event loop's time at concurrency 64; at 7,000 the
service answered 1.07× the requests per second, with the same resident memory."""


def server_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,  # RequestContextMiddleware logs each request, with its id
        "proxy_headers": False,  # nothing reads the client's address
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
    }


def serve(settings: Settings) -> None:
    # Asked once, and only where something depends on it (it imports the runtime): where the models run,
    # and which precision each serves, so that every process then chooses alike without asking again.
    asked = settings.engine == "auto" or (settings.precision == "auto" and settings.backend == "onnx")
    gpu = settings.device != "cpu" and gpu_available(settings) if asked else None
    mode = settings.engine_mode(bool(gpu))
    settings = settings.model_copy(update={"workers": settings.worker_count(), "gpu": gpu})
    listening = sockets.listening(settings, settings.workers)
    if settings.workers == 1 and mode == "inline":
        config = uvicorn.Config(
            functools.partial(serving_app, settings), factory=True, **server_options(settings)
        )
        with contextlib.suppress(KeyboardInterrupt):  # SIGINT: uvicorn raises it again once it has stopped
            uvicorn.Server(config).run(sockets=listening.for_workers)
        return
    with tempfile.TemporaryDirectory(prefix="rnnserve-") as scratch:
        metrics_dir = Path(scratch) / "metrics"
        metrics_dir.mkdir()
        # prometheus_client reads this in each process it is imported in: the engine and the workers.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        control = Path(scratch) / "control"
        ControlFolder.create(control, initial_plan(settings, [name for _, name in model_kinds(settings)]))
        settings = settings.model_copy(update={"multiprocess_dir": metrics_dir, "control_dir": control})
        if mode == "inline" and settings.threads == 0:
            # Each worker runs its own models: share the cores between them rather than oversubscribe.
            settings = settings.model_copy(update={"threads": settings.worker_threads()})
        engine = None
        if mode == "process":
            address = f"ipc://{scratch}/engine"
            engine = start_engine(settings, address)
            settings = settings.model_copy(update={"engine_address": address})
        logger.info("serving with %d HTTP workers, models %s", settings.workers,
                    "in one model engine" if engine else "in each worker")  # fmt: skip
        config = uvicorn.Config(
            functools.partial(serving_app, settings), factory=True, workers=settings.workers,
            **server_options(settings),
        )  # fmt: skip
        workers = Workers(config, listening, engine=engine)
        stopped = threading.Event()
        if engine is not None:
            threading.Thread(target=stop_if_engine_dies, args=(engine, stopped), daemon=True).start()
        try:
            workers.run()
        finally:
            stopped.set()
            if engine is not None:
                stop_engine(engine, settings.shutdown_timeout_s)
        if engine is not None and engine.exitcode not in (0, None):
            sys.exit(1)


class Workers(Multiprocess):
    """uvicorn's process manager, which also lets go of the port when it stops: once the workers have
    drained and closed their sockets, new connections are refused, not left unanswered in a backlog that
    nobody accepts from. SIGHUP looks for new model versions, in the processes that run the models,
    rather than restart the workers."""

    def __init__(
        self, config: uvicorn.Config, listening: sockets.Listening, engine: BaseProcess | None = None
    ) -> None:
        super().__init__(config, sockets=listening.for_workers)
        self.listening = listening
        self.engine = engine

    def handle_hup(self) -> None:
        models = [self.engine] if self.engine is not None else [p.process for p in self.processes]
        logger.info("SIGHUP: looking for new model versions")
        for process in models:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGHUP)

    def terminate_all(self) -> None:
        self.listening.close()
        super().terminate_all()


def serving_app(settings: Settings) -> FastAPI:
    """The app of a serving process, made by uvicorn once it handles the signals: logging (a worker
    process starts with none), fewer garbage collections, the app, and a drain on SIGTERM."""
    configure_logging(settings.log_level, settings.log_format)
    # RequestContextMiddleware logs each request, so uvicorn's access log stays off.
    logging.getLogger("uvicorn.access").propagate = False
    collect_less_often()
    drain = Drain(settings.drain_s)
    drain.take_over_sigterm()
    return create_app(settings, drain)


def collect_less_often() -> None:
    """Collect the youngest objects every `YOUNG_COLLECTION_EVERY` objects, the older ones as before."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, oldest)


def start_engine(settings: Settings, address: str) -> multiprocessing.process.BaseProcess:
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    engine = spawn.Process(target=run_engine, args=(settings, address, ready), name="rnnserve-engine")
    engine.start()
    if not ready.wait(ENGINE_START_TIMEOUT_S):
        engine.kill()
        sys.exit(f"the model engine did not start within {ENGINE_START_TIMEOUT_S:.0f} s")
    if not engine.is_alive():
        sys.exit(f"the model engine exited with {engine.exitcode} while starting; see its log above")
    return engine


def stop_if_engine_dies(engine: multiprocessing.process.BaseProcess, stopped: threading.Event) -> None:
    # One thread at a time may reap the engine: were this one to reap it while `stop_engine` (in the main
    # thread) waits for it, `stop_engine` could find it still "alive" and kill it. So wait for its end
    # without reaping it, and reap it here only while the service is not stopping.
    multiprocessing.connection.wait([engine.sentinel])
    if not stopped.is_set():
        engine.join()
        logger.error("the model engine exited with %s: stopping the service", engine.exitcode)
        os.kill(os.getpid(), signal.SIGTERM)


def stop_engine(engine: multiprocessing.process.BaseProcess, timeout_s: float) -> None:
    """`STOP_SIGNAL`, once the workers are gone; the engine answers what it holds and exits."""
    if engine.is_alive() and engine.pid is not None:
        os.kill(engine.pid, STOP_SIGNAL)
        engine.join(timeout_s + ENGINE_STOP_MARGIN_S)
    if engine.is_alive():
        logger.error(
            "the model engine did not stop within %.0f s: killing it", timeout_s + ENGINE_STOP_MARGIN_S
        )
        engine.kill()
        engine.join()
