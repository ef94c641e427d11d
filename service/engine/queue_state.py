"""Each model's queue as the model engine shares it with the HTTP workers: a small memory-mapped file.

A worker decides before it reads a request's body whether the model's queue would take it
(`admit()`), as a single-process service does; in engine mode the queue is in the engine. So the
engine writes each model's queue state (depth, capacity, whether it serves, its problem, the
Retry-After to give) into a file beside its socket, and every worker maps the same file and reads the
state in about 2 µs, with no message and no wait.

Staleness: the engine rewrites a model's slot in the same step as each change of its batcher's queue
(an input queued, a batch taken, a deadline passed, a problem found or cleared, the batcher closed),
so a slot is the engine's queue as it is now. What it cannot show is what is in transit: inputs that
workers admitted and sent and the engine has not yet taken from its socket. At most those are admitted
beyond the limit, and the engine's own queue, the final judge, refuses them (429) once their body has
been read, as it refuses everything that does not fit.

Layout (version `VERSION`, in the file's name): one fixed-size slot per model (`SLOT`), six
little-endian int64 numbers, then the model's name and its problem as UTF-8. A slot's `sequence` is
odd while the engine writes it and grows with each write (a seqlock): a reader that sees it odd, or
changed by the time it has read the slot, reads again, so no read mixes two states (on a CPU that
reorders stores, rarely one might: each number is then one the engine wrote, and its queue still
judges); 0 means never written (a model the engine did not load).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from service.admission import QueueState
from service.batching import Batcher

VERSION = 1
NAME_BYTES = 256  # a model's name is a folder's name: at most 255 bytes on Linux
PROBLEM_BYTES = 2048
NUMBERS = ("sequence", "depth", "capacity", "retry_after_s", "serving", "problem_bytes")
SLOT = np.dtype(
    [(name, "<i8") for name in NUMBERS] + [("name", f"S{NAME_BYTES}"), ("problem", f"S{PROBLEM_BYTES}")]
)
READ_ATTEMPTS = 100
"""A slot found mid-write this many times in a row is taken as unknown (its writer stopped mid-write)."""


def board_path(address: str) -> Path | None:
    """The board of the model engine at ZeroMQ `address`: a file beside its socket, so it lives in the
    server's scratch folder and goes with it. None for an engine that is not on an ipc:// socket."""
    if not address.startswith("ipc://"):
        return None
    return Path(f"{address.removeprefix('ipc://')}.queues-v{VERSION}")


def encode_problem(problem: str | None) -> bytes:
    """The problem as UTF-8, cut to fit its field (ending in "…" then)."""
    encoded = (problem or "").encode()
    if len(encoded) <= PROBLEM_BYTES:
        return encoded
    kept = encoded[: PROBLEM_BYTES - 3].decode(errors="ignore")  # never half a character
    return f"{kept}…".encode()


class QueueStateBoard:
    """The slots of every model the engine serves, over one memory-mapped file.

    The engine `create`s it and `write`s; each worker `open`s it read-only and `read`s. The file
    goes when the engine `remove`s it; a worker's mapping stays valid until the worker exits.
    """

    def __init__(self, slots: np.ndarray, path: Path) -> None:
        self.path = path
        numbers = np.ndarray((len(slots), len(NUMBERS)), np.dtype("<i8"), slots, strides=(SLOT.itemsize, 8))
        self._numbers = list(numbers)  # one view per slot: a row's numbers are read in one call
        self._problems = slots["problem"]
        self._slots = {name.decode(): index for index, name in enumerate(slots["name"].tolist())}

    @classmethod
    def create(cls, path: Path, names: Sequence[str]) -> QueueStateBoard:
        """A new board at `path`, one slot per model, none written yet."""
        slots = np.memmap(path, dtype=SLOT, mode="w+", shape=(max(1, len(names)),))
        slots["name"][: len(names)] = [name.encode() for name in names]
        return cls(np.asarray(slots), path)

    @classmethod
    def open(cls, path: Path) -> QueueStateBoard:
        """The board the engine created at `path`, read-only; `FileNotFoundError` if there is none."""
        return cls(np.asarray(np.memmap(path, dtype=SLOT, mode="r")), path)

    def slot(self, model: str) -> int | None:
        """Where model `model`'s state is, or None if the board has no slot for it."""
        return self._slots.get(model)

    def write(self, slot: int, state: QueueState) -> None:
        problem = encode_problem(state.problem)
        numbers = self._numbers[slot]
        numbers[0] += 1  # odd: being written
        numbers[1:] = (state.depth, state.capacity, state.retry_after_s, state.serving, len(problem))
        self._problems[slot] = problem
        numbers[0] += 1

    def read(self, slot: int) -> QueueState | None:
        """The slot's latest state; None if it was never written, or was mid-write at every attempt."""
        numbers = self._numbers[slot]
        for _ in range(READ_ATTEMPTS):
            sequence, depth, capacity, retry_after_s, serving, problem_bytes = numbers.tolist()
            if sequence % 2:
                continue
            problem = self._problems[slot].decode(errors="replace") if problem_bytes else None
            if numbers.item(0) != sequence:
                continue
            if sequence == 0:
                return None
            return QueueState(depth, capacity, bool(serving), problem, retry_after_s)
        return None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def share(board: QueueStateBoard, model: str, batcher: Batcher[Any, Any]) -> None:
    """Write `batcher`'s queue state into `model`'s slot now, and again at every change of it."""
    slot = board.slot(model)
    if slot is None:
        raise ValueError(f"the queue-state board {board.path} has no slot for model {model}")

    def publish() -> None:
        board.write(slot, batcher.state())

    batcher.on_change = publish
    publish()
