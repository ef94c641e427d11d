"""The V2 routes: health, server and model metadata, and inference, for every model served.

Inference is a `DirectRoute`, answered ahead of the framework like the REST prediction routes, and
queued on the same batchers. Errors have the protocol's shape, `{"error": "..."}`: 400 for bad input,
404 for an unknown model or version, 429, 503 and 504 as on every other route. Besides the protocol's
core, the routes Triton's clients call for a model's configuration and the repository index.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from fastapi import APIRouter, Request
from starlette.types import Receive, Scope, Send

from service import __version__
from service.deps import RegistryDep, SettingsDep
from service.errors import InvalidInput, NotFound, ServiceError, error_content
from service.headers import header
from service.registry import Registry
from service.responses import JSONBytesResponse
from service.routes.common import DirectRoute, read_body, request_timeout_s, send_json, unless_disconnected
from service.routes.health import readiness
from service.tasks.base import Problem, ServedModel, TensorSpec, check
from service.v2.tensors import Tensor, decompress, encode_infer_response, parse_infer_request

EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository"]
PLATFORMS = {"onnx": "onnx_onnxv1", "torchscript": "pytorch_torchscript"}
TRITON_BACKENDS = {"onnx": "onnxruntime", "torchscript": "pytorch"}


def served(registry: Registry, name: str, version: str | None) -> ServedModel[Any, Any]:
    """Model `name`, loaded, at `version` if one is named; `NotFound` or `ModelNotReady` otherwise."""
    model = registry.loaded(name)
    if version is not None and version != model.version:
        raise NotFound(
            f"model {name!r} version {version!r} is not served; this service serves version {model.version} "
            "(RNNSERVE_MODEL_VERSIONS pins another)"
        )
    return model


def error_body(error: ServiceError) -> tuple[int, dict[str, str]]:
    """The protocol's error answer: bad input is 400, everything else keeps its status code."""
    error_content(error)  # logs 5xx
    return (400 if isinstance(error, InvalidInput) else error.status_code), {"error": error.message}


def v2_error(error: ServiceError) -> JSONBytesResponse:
    status, body = error_body(error)
    response = JSONBytesResponse(body, status_code=status)
    response.headers.update(error.headers)
    return response


DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
             "FP32", "FP64"]  # fmt: skip
INFER_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "datatype": {"type": "string", "enum": DATATYPES},
                    "data": {"type": "array"},
                    "parameters": {"type": "object"},
                },
                "required": ["name", "shape", "datatype"],
            },
        },
        "outputs": {
            "type": "array",
            "items": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        },
        "parameters": {"type": "object"},
    },
    "required": ["inputs"],
}
INFER_OPERATION: dict[str, Any] = {
    "tags": ["V2 inference protocol"],
    "summary": "Run a model on tensors (KServe V2 / Open Inference Protocol)",
    "description": "JSON tensors (`name`, `shape`, `datatype`, `data`, row-major, flat or nested), or "
    "Triton's binary tensor data extension (`Inference-Header-Content-Length`, `binary_data_size`, "
    "`binary_data_output`, `binary_data`). Batched with the REST routes' inputs; GET the model's "
    "metadata for its tensors.",
    "parameters": [{"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": INFER_REQUEST}}},
    "responses": {
        "200": {
            "description": "The outputs",
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
        "400": {"description": "Bad input: `error` says what to fix"},
        "404": {"description": "Unknown model or version"},
        "429": {"description": "Overloaded: retry after `Retry-After` seconds"},
        "503": {"description": "Model not ready, or shutting down"},
    },
}
VERSIONED_INFER_OPERATION: dict[str, Any] = {
    **INFER_OPERATION,
    "parameters": [
        *INFER_OPERATION["parameters"],
        {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string"}},
    ],
}


def protocol_errors(
    endpoint: Callable[..., Awaitable[JSONBytesResponse]],
) -> Callable[..., Awaitable[JSONBytesResponse]]:
    """A GET endpoint whose `ServiceError`s are answered in the protocol's shape, not the service's."""

    @functools.wraps(endpoint)
    async def answer(*args: Any, **kwargs: Any) -> JSONBytesResponse:
        try:
            return await endpoint(*args, **kwargs)
        except ServiceError as exc:
            return v2_error(exc)

    return answer


class InferTensors(DirectRoute):
    path = "/v2/models/{model_name}/infer"
    pattern = re.compile(r"/v2/models/(?P<model_name>[^/]+)(?:/versions/(?P<model_version>[^/]+))?/infer")
    openapi = INFER_OPERATION
    also_documented: ClassVar[dict[str, dict[str, Any]]] = {
        "/v2/models/{model_name}/versions/{model_version}/infer": VERSIONED_INFER_OPERATION
    }

    async def answer(self, scope: Scope, receive: Receive, registry: Registry) -> Any:
        params = scope["path_params"]
        model = served(registry, params["model_name"], params["model_version"])
        model.queue.admit()  # before the body is read: a refusal costs next to nothing
        timeout_s = request_timeout_s(scope)
        limit = self.settings.max_body_bytes
        body = decompress(await read_body(receive), header(scope, b"content-encoding"), limit)
        request = parse_infer_request(body, header(scope, b"inference-header-content-length"))
        arrays = input_arrays(
            model.inputs, request.inputs, self.settings.max_inputs_per_request, model.declined_inputs()
        )
        check(model.tensor_problems(arrays), v2_place)
        if request.timeout_s is not None:
            timeout_s = min(timeout_s or request.timeout_s, request.timeout_s)
        chosen = chosen_outputs(model.outputs, request.outputs, request.binary_output, arrays)
        outputs = await unless_disconnected(receive, model.infer(arrays, v2_place, timeout_s))
        tensors = [(Tensor(name, "FP32", outputs[name]), binary) for name, binary in chosen]
        return encode_infer_response(
            model.name, model.version, request.id, tensors, {"precision": model.precision}
        )

    async def respond(self, send: Send, content: Any) -> None:
        body, header_length = content
        headers = [(b"content-length", str(len(body)).encode())]
        if header_length is None:
            headers.append((b"content-type", b"application/json"))
        else:
            headers.append((b"content-type", b"application/octet-stream"))
            headers.append((b"inference-header-content-length", str(header_length).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def refuse(self, send: Send, error: ServiceError) -> None:
        status, body = error_body(error)
        await send_json(send, status, body, error.headers.items())


def v2_place(problem: Problem) -> str:
    """How the V2 protocol names a problem's place: the tensor, and its row."""
    return problem.field if problem.item is None else f"{problem.field}[{problem.item}]"


def input_arrays(
    specs: tuple[TensorSpec, ...],
    tensors: dict[str, Tensor],
    max_inputs: int,
    declined: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The request's tensors by name, checked against the model's names and datatypes. `declined`: the
    inputs of the task that this model does not take, each refused with the task's own message."""
    known = {spec.name: spec for spec in specs}
    listing = ", ".join(
        f"{s.name} {s.datatype} {list(s.shape)}" + (" (optional)" if s.optional else "") for s in specs
    )
    refused = [Problem(name, message) for name, message in (declined or {}).items() if name in tensors]
    check(refused, v2_place)
    unknown = sorted(set(tensors) - set(known))
    if unknown:
        raise InvalidInput(f"inputs: {', '.join(map(repr, unknown))} not known; this model takes {listing}")
    arrays = {}
    for spec in specs:
        tensor = tensors.get(spec.name)
        if tensor is None:
            if not spec.optional:
                raise InvalidInput(f"inputs: {spec.name!r} is missing; this model takes {listing}")
            continue
        if tensor.datatype not in (spec.datatype, *spec.accepted):
            raise InvalidInput(
                f"input {spec.name!r}: datatype is {tensor.datatype}; send "
                f"{' or '.join((spec.datatype, *spec.accepted))}"
            )
        arrays[spec.name] = tensor.array
    rows = len(next(iter(arrays.values())))
    if rows > max_inputs:
        raise InvalidInput(
            f"the batch dimension is {rows}; at most {max_inputs} inputs per request "
            "(RNNSERVE_MAX_INPUTS_PER_REQUEST): split them over several requests"
        )
    return arrays


def chosen_outputs(
    specs: tuple[TensorSpec, ...], requested: Any, binary_output: bool, given: dict[str, Any]
) -> list[tuple[str, bool]]:
    """The outputs to send, in order, each with whether it goes as binary data. An optional output
    comes with the input of its name (`quantiles`)."""
    names = [spec.name for spec in specs]
    produced = [spec.name for spec in specs if not spec.optional or spec.name in given]
    if requested is None:
        return [(name, binary_output) for name in produced]
    unknown = [output.name for output in requested if output.name not in names]
    if unknown:
        raise InvalidInput(
            f"outputs: {', '.join(map(repr, unknown))} not known; this model has {', '.join(names)}"
        )
    for output in requested:
        if output.name not in produced:
            raise InvalidInput(f"outputs: {output.name!r} comes only with the input {output.name!r}; send it")
    return [(output.name, output.binary) for output in requested]


router = APIRouter(prefix="/v2", tags=["V2 inference protocol"])


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "rnnserve", "version": __version__, "extensions": EXTENSIONS}


@router.get("/health/live", summary="The server is up")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready", summary="Every model is ready", responses={503: {"description": "Not ready"}})
async def server_ready(registry: RegistryDep, request: Request) -> JSONBytesResponse:
    ready = (await readiness(registry, request.app.state.drain)).ready
    return JSONBytesResponse({"ready": ready}, status_code=200 if ready else 503)


@protocol_errors
async def model_metadata(
    registry: RegistryDep, settings: SettingsDep, model_name: str, model_version: str | None = None
) -> JSONBytesResponse:
    model = served(registry, model_name, model_version)
    return JSONBytesResponse({
        "name": model.name,
        "versions": [model.version],
        "platform": PLATFORMS[settings.backend],
        "inputs": [spec.describe() for spec in model.inputs],
        "outputs": [spec.describe() for spec in model.outputs],
    })  # fmt: skip


@protocol_errors
async def model_ready(
    registry: RegistryDep, model_name: str, model_version: str | None = None
) -> JSONBytesResponse:
    model = served(registry, model_name, model_version)
    state = (await registry.readiness()).get(model.name, "unknown")
    ready = state == "ready"
    body: dict[str, Any] = {"name": model.name, "ready": ready} | ({} if ready else {"error": state})
    return JSONBytesResponse(body, status_code=200 if ready else 503)


@protocol_errors
async def model_config(
    registry: RegistryDep, settings: SettingsDep, model_name: str, model_version: str | None = None
) -> JSONBytesResponse:
    """The model's configuration as Triton describes it (dimensions without the batch dimension)."""
    model = served(registry, model_name, model_version)

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "data_type": f"TYPE_{s.datatype}", "dims": list(s.shape[1:])} for s in specs]

    return JSONBytesResponse({
        "name": model.name,
        "platform": PLATFORMS[settings.backend],
        "backend": TRITON_BACKENDS[settings.backend],
        "max_batch_size": model.batching.max_batch_size,
        "input": tensors(model.inputs),
        "output": tensors(model.outputs),
        "dynamic_batching": {"max_queue_delay_microseconds": int(model.batching.max_delay_ms * 1000)},
        "parameters": {"precision": {"string_value": model.precision}},
    })  # fmt: skip


ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "Unknown model or version",
        "content": {"application/json": {"schema": ERROR_SCHEMA}},
    },
    503: {"description": "The model is not ready", "content": {"application/json": {"schema": ERROR_SCHEMA}}},
}
ENDPOINTS: list[tuple[str, Callable[..., Any], str]] = [
    ("", model_metadata, "Model metadata: its tensors"),
    ("/ready", model_ready, "The model is ready"),
    ("/config", model_config, "Model configuration, as Triton gives it"),
]
for suffix, endpoint, summary in ENDPOINTS:
    for path in (
        f"/models/{{model_name}}{suffix}",
        f"/models/{{model_name}}/versions/{{model_version}}{suffix}",
    ):
        router.add_api_route(path, endpoint, methods=["GET"], summary=summary, responses=MODEL_ERRORS)
