"""Structured logs: one JSON object (or one readable line) per record, with the request's id; and the
request log, written in batches."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

request_id: ContextVar[str] = ContextVar("request_id", default="-")
"""The id of the request being handled; set by `RequestContextMiddleware`."""

# Attributes every record has, and uvicorn's ANSI-coloured copy of its messages: not worth a field.
_RECORD_FIELDS = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "color_message",
}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """What the caller passed with `extra=`."""
    return {key: value for key, value in record.__dict__.items() if key not in _RECORD_FIELDS}


class _RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being handled, unless it already has one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            **_extra_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _extra_fields(record)
        if extra:
            first, newline, rest = line.partition("\n")
            line = first + "".join(f" {k}={v}" for k, v in extra.items()) + newline + rest
        return line


def configure_logging(level: str, format: Literal["json", "text"]) -> None:
    """Send every log record (uvicorn's too) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Neither format shows the process or thread, and on Python 3.11 each record's process id would be
    # a getpid() system call.
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


class RequestLog:
    """The request log: one INFO record per request (`POST /forecast`, with its id, status and duration
    in milliseconds), handed to the logging handlers in batches.

    A request only notes its line; the event loop makes the records of the lines noted every
    `interval_s`, or at once when `max_pending` wait, each dated when its request ended. Made one at a
    time between requests, the records took about 16 % of the event loop's time at concurrency 64
    (about 50 µs of CPU a request, four times what the same call costs in a tight loop: between
    requests, its code runs cold); made in batches, about 6 %. Call `flush` before the process ends:
    lines still pending are lost with it.
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 0.1, max_pending: int = 1024) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.max_pending = max_pending
        self._pending: list[tuple[float, str, str, str, int, float]] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, method: str, path: str, request_id: str, status: int, seconds: float) -> None:
        """Note a request that ended now; call it from the event loop."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        self._pending.append((time.time(), method, path, request_id, status, seconds))
        if len(self._pending) >= self.max_pending:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval_s, self.flush)

    def flush(self) -> None:
        """Log every line noted so far."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        for ended, method, path, rid, status, seconds in pending:
            extra = {"request_id": rid, "status": status, "duration_ms": round(seconds * 1000, 2)}
            record = self.logger.makeRecord(
                self.logger.name, logging.INFO, __file__, 0, "%s %s", (method, path), None, extra=extra
            )
            record.created, record.msecs = ended, int((ended - int(ended)) * 1000) + 0.0
            self.logger.handle(record)
