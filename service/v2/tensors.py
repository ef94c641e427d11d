"""V2 inference requests and responses: JSON tensors and binary tensor data to numpy, and back.

A request body is a JSON object, optionally followed by binary tensor data (Triton's binary tensor
data extension, what `tritonclient` sends by default): the header `Inference-Header-Content-Length`
says how many bytes the JSON takes, and each input whose parameters hold `binary_data_size` takes that
many bytes of what follows, in order, little-endian, row-major. A response is built the same way.
Pure functions: bytes in, arrays out. Every problem is an `InvalidInput` that names the tensor.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

DATATYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(kind).newbyteorder("<")
    for name, kind in {
        "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
        "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
        "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    }.items()
}  # fmt: skip
"""The protocol's datatypes this service reads and writes (all but BYTES), as little-endian dtypes."""

EXAMPLE = '{"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "FP32", "data": [...]}]}'


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    array: np.ndarray


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    outputs: list[RequestedOutput] | None
    """The outputs asked for, in order; None for all of them."""
    binary_output: bool
    """`binary_data_output`: outputs not listed in `outputs` come as binary data."""
    timeout_s: float | None
    """The request's `timeout` parameter (microseconds on the wire)."""


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """The body of a request sent with `Content-Encoding` gzip or deflate, at most `limit` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding} is not supported: send gzip, deflate or none"
        )
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the {encoding} body could not be decompressed ({exc})") from None
    if len(data) > limit:
        raise PayloadTooLarge(
            f"the decompressed body is larger than {limit:,} bytes (RNNSERVE_MAX_BODY_BYTES)"
        )
    return data


def parse_infer_request(body: bytes, header_length: str) -> InferRequest:
    """Read an inference request: its JSON part and, when `header_length` is given, its binary data."""
    json_part, binary = body, b""
    if header_length:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 < length <= len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length is {header_length[:20]!r}, but the body has {len(body):,} "
                "bytes: it must be the length of the JSON part, which the binary data follows"
            )
        json_part, binary = body[:length], body[length:]
    try:
        request = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request is not valid JSON ({exc}); send e.g. {EXAMPLE}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise InvalidInput(
            f"the request must be a JSON object with a non-empty list `inputs`, e.g. {EXAMPLE}"
        )
    parameters = _parameters(request, "the request")
    inputs: dict[str, Tensor] = {}
    offset = 0
    for index, entry in enumerate(request["inputs"]):
        tensor, offset = _input(entry, index, binary, offset)
        if tensor.name in inputs:
            raise InvalidInput(f"inputs: {tensor.name!r} is given twice")
        inputs[tensor.name] = tensor
    if offset != len(binary):
        raise InvalidInput(
            f"the body has {len(binary) - offset:,} bytes of binary data that no input claims: each binary "
            "input must give its size as parameters.binary_data_size"
        )
    timeout_us = parameters.get("timeout")
    if timeout_us is not None and not (isinstance(timeout_us, int | float) and timeout_us > 0):
        raise InvalidInput(f"parameters.timeout is {timeout_us!r}: give a positive number of microseconds")
    request_id = request.get("id")
    return InferRequest(
        id=None if request_id is None else str(request_id),
        inputs=inputs,
        outputs=_outputs(request.get("outputs")),
        binary_output=parameters.get("binary_data_output") is True,
        timeout_s=None if timeout_us is None else timeout_us / 1e6,
    )


def _parameters(entry: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInput(f"{where}: `parameters` must be a JSON object")
    return parameters


def _input(entry: Any, index: int, binary: bytes, offset: int) -> tuple[Tensor, int]:
    """Input `index` of the request, and where the next binary input starts."""
    where = f"inputs[{index}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InvalidInput(f"{where}: each input is an object with `name`, `shape`, `datatype` and `data`")
    name = entry["name"]
    where = f"input {name!r}"
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInput(f"{where}: `shape` must be a list of non-negative integers, e.g. [1, 28, 28]")
    datatype = entry.get("datatype")
    if datatype not in DATATYPES:
        raise InvalidInput(
            f"{where}: datatype {datatype!r} is not supported; use one of {', '.join(DATATYPES)}"
        )
    dtype = DATATYPES[datatype]
    size = math.prod(shape)
    binary_size = _parameters(entry, where).get("binary_data_size")
    if binary_size is not None:
        if "data" in entry:
            raise InvalidInput(f"{where}: give `data` or parameters.binary_data_size, not both")
        if binary_size != size * dtype.itemsize or binary_size > len(binary) - offset:
            raise InvalidInput(
                f"{where}: binary_data_size is {binary_size!r}, but shape {shape} of {datatype} takes "
                f"{size * dtype.itemsize:,} bytes and {len(binary) - offset:,} bytes of binary data are left"
            )
        array = np.frombuffer(binary, dtype=dtype, count=size, offset=offset).reshape(shape)
        return Tensor(name, datatype, array), offset + binary_size
    if "data" not in entry:
        raise InvalidInput(f"{where}: has no `data` (nor parameters.binary_data_size)")
    return Tensor(name, datatype, _json_data(entry["data"], shape, datatype, where)), offset


def _json_data(data: Any, shape: list[int], datatype: str, where: str) -> np.ndarray:
    """JSON `data`, flat or nested, row-major, as an array of `shape` and `datatype`."""
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: `data` must be a list (flat or nested, row-major)")
    try:
        array = np.array(data)
    except (ValueError, OverflowError):
        raise InvalidInput(f"{where}: `data` is ragged: nested lists must have equal lengths") from None
    missing = None
    if array.dtype.kind == "O" and datatype.startswith("FP"):  # null: a missing value, sent as NaN
        values = array.ravel()
        missing = np.array([value is None for value in values]).reshape(array.shape)
        if missing.any() and all(type(v) in (int, float) for v in values[~missing.ravel()]):
            array = np.where(missing, 0.0, array).astype(np.float64)
        else:
            missing = None
    expected_kinds = "b" if datatype == "BOOL" else "iu" if datatype[0] in "UI" else "iuf"
    if array.size and array.dtype.kind not in expected_kinds:
        wanted = {"b": "booleans", "iu": "integers", "iuf": "numbers"}[expected_kinds]
        raise InvalidInput(f"{where}: {datatype} data must hold {wanted} only")
    if array.size != math.prod(shape) or (array.ndim > 1 and list(array.shape) != shape):
        raise InvalidInput(
            f"{where}: `data` holds {array.size} values in shape {list(array.shape)}, but `shape` is {shape}"
        )
    dtype = DATATYPES[datatype]
    if array.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if int(array.min()) < info.min or int(array.max()) > info.max:
            raise InvalidInput(f"{where}: values must lie in {info.min}..{info.max} for {datatype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise InvalidInput(f"{where}: `data` must hold finite numbers (null for a missing value)")
    if missing is not None:
        array = np.where(missing, np.nan, array)
    return array.astype(dtype).reshape(shape)


def _outputs(requested: Any) -> list[RequestedOutput] | None:
    if requested is None:
        return None
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise InvalidInput(
            '`outputs` must be a list of objects with a `name`, e.g. [{"name": "probabilities"}]'
        )
    return [
        RequestedOutput(o["name"], _parameters(o, f"output {o['name']!r}").get("binary_data") is True)
        for o in requested
    ]


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: list[tuple[Tensor, bool]],
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The response body for `outputs`, each with whether it goes as binary data, and the length of its
    JSON part when binary data follows (else None); `parameters` are the response's own."""
    described, binary = [], []
    for tensor, as_binary in outputs:
        array = np.ascontiguousarray(tensor.array, dtype=DATATYPES[tensor.datatype])
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(array.shape)}
        if as_binary:
            entry["parameters"] = {"binary_data_size": array.nbytes}
            binary.append(array.tobytes())
        else:
            entry["data"] = array.ravel()
        described.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    if parameters:
        response["parameters"] = parameters
    response["outputs"] = described
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary:
        return header, None
    return b"".join([header, *binary]), len(header)
