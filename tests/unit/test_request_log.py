"""The request log (`service.logs.RequestLog`), which hands its lines to logging in batches, on a real
event loop and real logging handlers; the whole app's request lines are in
tests/app/test_service_operations.py and, from a real process that is stopped, tests/process/test_e2e.py."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from service.logs import JsonFormatter, RequestLog


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own at INFO, whose records are written as JSON lines to a string."""
    logger = logging.getLogger("tests.request_log")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_lines_are_written_together_after_the_interval_each_with_its_own_time(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    log = RequestLog(logger, interval_s=1.0)  # long enough that no stall of the machine writes early
    ended = time.time()
    log.add("POST", "/forecast", "r-1", 200, 0.0123)
    await asyncio.sleep(0.05)
    log.add("GET", "/health/ready", "r-2", 503, 0.001)
    assert lines(stream) == []  # noted, not yet written
    for _ in range(1000):  # written 1 s after the first; a busy machine may take longer
        if stream.getvalue():
            break
        await asyncio.sleep(0.01)
    first, second = lines(stream)
    assert first["message"] == "POST /forecast" and second["message"] == "GET /health/ready"
    assert (first["request_id"], first["status"], first["duration_ms"]) == ("r-1", 200, 12.3)
    assert (second["request_id"], second["status"], second["level"]) == ("r-2", 503, "INFO")
    # Dated when each request ended, not when the lines were written (1 s later).
    assert str(first["time"]) < str(second["time"])
    assert abs(datetime.fromisoformat(str(first["time"])).timestamp() - ended) < 0.05
    log.add("POST", "/forecast", "r-3", 200, 0.01)
    log.flush()  # at once, as the app's shutdown does
    assert [line["request_id"] for line in lines(stream)] == ["r-1", "r-2", "r-3"]


async def test_many_pending_lines_are_written_at_once_and_none_when_info_is_off(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    log = RequestLog(logger, interval_s=3600, max_pending=3)
    for number in range(3):
        log.add("POST", "/predict/digit", f"r-{number}", 200, 0.001)
    assert [line["request_id"] for line in lines(stream)] == ["r-0", "r-1", "r-2"]
    logger.setLevel(logging.WARNING)
    log.add("POST", "/predict/digit", "r-3", 200, 0.001)
    log.flush()
    assert len(lines(stream)) == 3
