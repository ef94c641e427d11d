"""The messages between HTTP workers and the model engine, on their own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import msgpack
import numpy as np
import pytest

from service.admission import QueueState
from service.batching import Batcher
from service.config import BatchSettings, Settings
from service.engine.client import RemoteAdmission, refusal_metrics
from service.engine.protocol import (
    ProtocolError,
    decode_inputs,
    decode_outputs,
    encode_inputs,
    encode_outputs,
    error_message,
    pack,
    raise_error,
    unpack,
)
from service.engine.queue_state import (
    PROBLEM_BYTES,
    SLOT,
    QueueStateBoard,
    board_path,
    share,
)
from service.errors import (
    InferenceFailed,
    ModelNotReady,
    Overloaded,
    QueueTimeout,
    ServiceError,
    ShuttingDown,
)
from service.metrics import ServiceMetrics


def roundtrip(message: dict[str, object]) -> dict[str, object]:
    return unpack(pack(message))


def test_inputs_of_one_shape_and_of_many_lengths_travel_exactly() -> None:
    rng = np.random.default_rng(0)
    images = list(rng.random((5, 28, 28), dtype=np.float32))
    windows = [rng.random(n, dtype=np.float32) for n in (16, 256, 37)]
    for inputs in (images, windows):
        decoded = decode_inputs(roundtrip({"kind": "infer", **encode_inputs(inputs)}))
        assert len(decoded) == len(inputs)
        for got, sent in zip(decoded, inputs, strict=True):
            assert got.dtype == sent.dtype
            np.testing.assert_array_equal(got, sent)


def test_outputs_travel_stacked() -> None:
    outputs = [np.full((2, 4), i, dtype=np.float32) for i in range(3)]
    decoded = decode_outputs(roundtrip({"kind": "result", **encode_outputs(outputs)}))
    np.testing.assert_array_equal(np.stack(decoded), np.stack(outputs))


def test_an_error_is_raised_again_as_its_own_class() -> None:
    for error in (Overloaded("queue full"), QueueTimeout("too late")):
        with pytest.raises(type(error), match=error.message) as raised:
            raise_error(roundtrip(error_message(error)))
        assert raised.value.status_code == error.status_code


def test_an_unknown_error_class_becomes_an_inference_failure() -> None:
    with pytest.raises(InferenceFailed, match="odd"):
        raise_error({"kind": "error", "error": "SystemExit", "message": "odd"})


def test_another_protocol_version_or_garbage_is_refused_by_name() -> None:
    with pytest.raises(ProtocolError, match="version 99"):
        unpack(msgpack.packb({"v": 99, "kind": "infer"}))
    with pytest.raises(ProtocolError, match="unreadable"):
        unpack(b"\xc1")


@pytest.mark.parametrize(
    ("engine", "workers", "gpu", "device", "mode"),
    [
        ("auto", 1, True, "auto", "inline"),
        ("auto", 4, False, "auto", "inline"),
        ("auto", 4, True, "auto", "process"),
        ("auto", 4, True, "cpu", "inline"),
        ("process", 1, False, "auto", "process"),
        ("inline", 4, True, "auto", "inline"),
    ],
)
def test_auto_puts_the_models_in_an_engine_only_for_several_workers_on_a_gpu(
    engine: str, workers: int, gpu: bool, device: str, mode: str
) -> None:
    settings = Settings(engine=engine, workers=workers, device=device)  # type: ignore[arg-type]
    assert settings.engine_mode(gpu_available=gpu) == mode


def test_queue_states_written_by_the_engine_are_read_by_a_worker_exactly(tmp_path: Path) -> None:
    engine = QueueStateBoard.create(tmp_path / "board", ["digit_lstm", "sine_gru"])
    worker = QueueStateBoard.open(tmp_path / "board")
    assert (worker.slot("digit_lstm"), worker.slot("sine_gru"), worker.slot("other")) == (0, 1, None)
    assert worker.read(0) is None  # never written: the engine did not load the model
    states = [
        QueueState(depth=5, capacity=8, serving=True, problem=None, retry_after_s=2),
        QueueState(
            depth=0, capacity=64, serving=True, problem="its last 5 model calls failed", retry_after_s=1
        ),
        QueueState(depth=0, capacity=64, serving=False, problem=None, retry_after_s=1),
    ]
    for state in states:
        engine.write(1, state)
        assert worker.read(1) == state  # the same mapping: no reopening, no message
    assert worker.read(0) is None


def test_a_long_problem_is_cut_to_its_field_on_a_character_boundary(tmp_path: Path) -> None:
    board = QueueStateBoard.create(tmp_path / "board", ["m"])
    problem = "the last call failed with: " + "é" * PROBLEM_BYTES
    board.write(0, QueueState(depth=0, capacity=8, serving=True, problem=problem, retry_after_s=1))
    state = board.read(0)
    assert state is not None and state.problem is not None
    assert state.problem.endswith("é…") and problem.startswith(state.problem[:-1])
    assert len(state.problem.encode()) <= PROBLEM_BYTES


def test_a_slot_mid_write_is_never_read_half_written(tmp_path: Path) -> None:
    board = QueueStateBoard.create(tmp_path / "board", ["m"])
    state = QueueState(depth=3, capacity=8, serving=True, problem=None, retry_after_s=1)
    board.write(0, state)
    raw = np.memmap(tmp_path / "board", dtype=SLOT, mode="r+")
    raw["sequence"][0] += 1  # as the engine does before it writes the slot
    raw["depth"][0] = 7
    assert board.read(0) is None  # odd sequence: read again, and give up if it stays so
    raw["sequence"][0] += 1
    assert board.read(0) == QueueState(depth=7, capacity=8, serving=True, problem=None, retry_after_s=1)


def test_the_board_lies_beside_the_engines_ipc_socket_only() -> None:
    assert board_path("ipc:///tmp/rnnserve-x/engine") == Path("/tmp/rnnserve-x/engine.queues-v1")
    assert board_path("tcp://127.0.0.1:5555") is None


def refusal(admit: Callable[[], None]) -> ServiceError:
    """The error that calling `admit` raises."""
    with pytest.raises(ServiceError) as raised:
        admit()
    return raised.value


async def test_a_worker_refuses_as_the_engines_batcher_would_at_every_change_of_its_queue(
    tmp_path: Path,
) -> None:
    """The engine's real batcher, shared on a board; a worker's view of it, reading the board."""
    batching = BatchSettings(
        max_batch_size=8, max_delay_ms=0, max_queue_size=3, queue_timeout_s=60,
        failures_before_unready=1, probe_interval_s=60,
    )  # fmt: skip
    release, failing = threading.Event(), threading.Event()

    def run_batch(inputs: list[int]) -> list[int]:
        release.wait(timeout=30)
        if failing.is_set():
            raise RuntimeError("the device is gone")
        return inputs

    batcher = Batcher("m", run_batch, batching, ServiceMetrics().for_batcher("m"))
    batcher.start()
    board = QueueStateBoard.create(tmp_path / "board", ["m"])
    share(board, "m", batcher)
    worker_board = QueueStateBoard.open(board.path)
    worker_metrics = ServiceMetrics()

    def waiting(depth: int) -> QueueState:
        return QueueState(depth=depth, capacity=3, serving=True, problem=None, retry_after_s=1)

    view = RemoteAdmission("m", worker_board, 0, refusal_metrics(worker_metrics, "m"))
    view.admit()

    running = asyncio.ensure_future(batcher.submit_many([0]))  # taken at once; its call waits
    await asyncio.sleep(0)
    assert worker_board.read(0) == waiting(1)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if worker_board.read(0) == waiting(0):
            break
    else:
        pytest.fail(f"the batcher did not take its first input: the board shows {worker_board.read(0)}")
    queued = asyncio.ensure_future(batcher.submit_many([1, 2, 3]))  # waits for the call to end
    await asyncio.sleep(0)
    assert worker_board.read(0) == waiting(3)
    full = refusal(batcher.admit)
    assert isinstance(full, Overloaded) and "has 3 inputs waiting (the limit is 3)" in full.message
    remote = refusal(view.admit)
    assert (type(remote), remote.message, remote.headers) == (Overloaded, full.message, full.headers)
    refused = {"model": "m", "reason": "overloaded"}
    assert worker_metrics.registry.get_sample_value("rnnserve_rejected_inputs_total", refused) == 1

    release.set()
    assert (await running, await queued) == ([0], [1, 2, 3])
    assert worker_board.read(0) == batcher.state()
    view.admit()  # room again

    failing.set()
    with pytest.raises(InferenceFailed):
        await batcher.submit_many([4])
    unready = refusal(view.admit)
    assert isinstance(unready, ModelNotReady) and unready.message == refusal(batcher.admit).message

    await batcher.close()
    closed = refusal(view.admit)
    assert isinstance(closed, ShuttingDown) and closed.message == refusal(batcher.admit).message
