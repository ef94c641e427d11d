"""Running the service: one process, or several HTTP workers with their models inline or in a model
engine.

- One worker, models inline (the default): uvicorn serves the app in this process.
- `RNNSERVE_WORKERS=N`: uvicorn's process manager runs N workers on one listening socket.
  - `RNNSERVE_ENGINE=inline`: each worker loads the models and batches its own requests.
  - `RNNSERVE_ENGINE=process`: this process first starts the model engine (`service.engine`), and the
    workers send it their inputs, so batches form across all workers. The engine outlives the
    workers: on SIGTERM they finish their requests first, then the engine stops. If the engine dies,
    the whole service stops (exit 1) for its supervisor to restart it.
With several processes, every process writes its metrics into one scratch folder and any worker's
`/metrics` shows their sum.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from service.app import create_app
from service.config import Settings
from service.drain import Drain
from service.engine.server import run_engine
from service.logs import configure_logging

ENGINE_STOP_MARGIN_S = 5.0
"""Once the workers are gone: how much longer than the shutdown timeout the model engine gets to exit."""

logger = logging.getLogger(__name__)

ENGINE_START_TIMEOUT_S = 300.0


def server_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,  # RequestContextMiddleware logs each request, with its id
        "proxy_headers": False,  # nothing reads the client's address
        "timeout_graceful_shutdown": settings.shutdown_timeout_s,
    }


def gpu_available(settings: Settings) -> bool:
    """Whether the chosen backend would run the models on a GPU (without loading a model)."""
    if settings.backend == "torchscript":
        import torch  # only for the TorchScript backend, which needs torch anyway

        return bool(torch.cuda.is_available())
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def serve(settings: Settings) -> None:
    mode = settings.engine_mode(gpu_available(settings) if settings.engine == "auto" else False)
    settings = settings.model_copy(update={"workers": settings.worker_count()})
    if settings.workers == 1 and mode == "inline":
        uvicorn.run(functools.partial(serving_app, settings), factory=True, **server_options(settings))
        return
    with tempfile.TemporaryDirectory(prefix="rnnserve-") as scratch:
        metrics_dir = Path(scratch) / "metrics"
        metrics_dir.mkdir()
        # prometheus_client reads this in each process it is imported in: the engine and the workers.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        settings = settings.model_copy(update={"multiprocess_dir": metrics_dir})
        if mode == "inline" and settings.threads == 0:
            # Each worker runs its own models: share the cores between them rather than oversubscribe.
            settings = settings.model_copy(
                update={"threads": max(1, len(os.sched_getaffinity(0)) // settings.workers)}
            )
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
        workers = Workers(config, sockets=[config.bind_socket()])
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
    """uvicorn's process manager, which also lets go of the listening socket when it stops: once the
    workers have drained and closed their copies, new connections are refused, not left unanswered in
    a backlog that nobody accepts from."""

    def terminate_all(self) -> None:
        for listening in self.sockets:
            listening.close()
        super().terminate_all()


def serving_app(settings: Settings) -> FastAPI:
    """The app of a serving process, made by uvicorn once it handles the signals: logging (a worker
    process starts with none), the app, and a drain on SIGTERM."""
    configure_logging(settings.log_level, settings.log_format)
    # RequestContextMiddleware logs each request, so uvicorn's access log stays off.
    logging.getLogger("uvicorn.access").propagate = False
    drain = Drain(settings.drain_s)
    drain.take_over_sigterm()
    return create_app(settings, drain)


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
    engine.join()
    if not stopped.is_set():
        logger.error("the model engine exited with %s: stopping the service", engine.exitcode)
        os.kill(os.getpid(), signal.SIGTERM)


def stop_engine(engine: multiprocessing.process.BaseProcess, timeout_s: float) -> None:
    """SIGTERM, once the workers are gone; the engine answers what it holds and exits."""
    if engine.is_alive():
        engine.terminate()
        engine.join(timeout_s + ENGINE_STOP_MARGIN_S)
    if engine.is_alive():
        logger.error(
            "the model engine did not stop within %.0f s: killing it", timeout_s + ENGINE_STOP_MARGIN_S
        )
        engine.kill()
        engine.join()
