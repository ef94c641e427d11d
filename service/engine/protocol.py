"""The messages between HTTP workers and the model engine: msgpack maps, arrays as raw bytes.

Each message is one ZeroMQ frame: a msgpack map with the protocol version `v`, a `kind` and the
request's `id` (the worker's, echoed in the answer). Arrays travel as raw bytes in its field `data`.

worker -> engine:
- `infer`: `model`, the `version` of it that the worker's front checked the inputs for, the
  request's `timeout_s` (or nil), and the inputs as `dtype` and `shapes` (one per input) with
  `data` holding them all, concatenated;
- `cancel`: the client of request `id` went away: drop its inputs that are still queued;
- `state`: asks for readiness and the models' description;
- `index`, `load` (`model`, `version` or nil), `unload` (`model`), `scan`: a repository call that the
  engine makes for every worker (`service.lifecycle`).

engine -> worker:
- `result`: the outputs, stacked, as `dtype`, `shape` and `data`;
- `error`: a `ServiceError`'s class name, `message` and `errors`, raised again in the worker;
- `state`: `readiness` and `models`, as `GET /health/ready` and `GET /models` show them;
- `done`: a repository call's `result`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np

from service import errors
from service.errors import ServiceError

VERSION = 2


class ProtocolError(Exception):
    """A message this side cannot read: the other side speaks another version, or is not rnnserve."""


def pack(message: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb({"v": VERSION, **message})
    return packed


def unpack(frame: bytes) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(frame)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"an unreadable message: {exc}") from None
    if not isinstance(message, dict) or message.get("v") != VERSION:
        version = message.get("v") if isinstance(message, dict) else None
        raise ProtocolError(f"a message of protocol version {version!r}; this side speaks {VERSION}")
    return message


def encode_inputs(inputs: Sequence[np.ndarray]) -> dict[str, Any]:
    """Arrays of one dtype and any shapes, as the fields of a message."""
    dtype = inputs[0].dtype if inputs else np.dtype(np.float32)
    flat = np.concatenate([np.asarray(x, dtype=dtype).ravel() for x in inputs]) if inputs else np.empty(0)
    return {"dtype": dtype.str, "shapes": [list(x.shape) for x in inputs], "data": flat.tobytes()}


def decode_inputs(message: dict[str, Any]) -> list[np.ndarray]:
    flat = np.frombuffer(message["data"], dtype=np.dtype(message["dtype"]))
    shapes = [tuple(shape) for shape in message["shapes"]]
    if shapes and all(shape == shapes[0] for shape in shapes):
        return list(flat.reshape(len(shapes), *shapes[0]))
    arrays, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        arrays.append(flat[offset : offset + size].reshape(shape))
        offset += size
    return arrays


def encode_outputs(outputs: Sequence[np.ndarray]) -> dict[str, Any]:
    stacked = np.stack(outputs)
    return {"dtype": stacked.dtype.str, "shape": list(stacked.shape), "data": stacked.tobytes()}


def decode_outputs(message: dict[str, Any]) -> list[np.ndarray]:
    stacked = np.frombuffer(message["data"], dtype=np.dtype(message["dtype"])).reshape(message["shape"])
    return list(stacked)


def error_message(exc: ServiceError) -> dict[str, Any]:
    return {"kind": "error", "error": type(exc).__name__, "message": exc.message, "errors": exc.errors}


def raise_error(message: dict[str, Any]) -> None:
    """Raise the `ServiceError` an `error` message carries, as the same class."""
    kind = getattr(errors, str(message.get("error")), None)
    if not (isinstance(kind, type) and issubclass(kind, ServiceError)):
        kind = errors.InferenceFailed
    raise kind(str(message.get("message")), message.get("errors"))
