"""Structured logs: one JSON object (or one readable line) per record, with the request's id."""

from __future__ import annotations

import logging
import sys
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
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
