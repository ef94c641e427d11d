"""The repository extension of the protocol, as Triton and MLServer speak it: the index of every
model version and its state, and the calls that load and unload models while the service runs.

Loading and unloading need an admin key (RNNSERVE_ADMIN_KEYS), sent as an API key is; without admin
keys configured they are off, so nobody can unload a model of an open service. The index is read like
any other route. Errors are answered in the protocol's shape, `{"error": ...}`.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.deps import RepositoryDep, SettingsDep
from service.errors import Forbidden, InvalidInput, Unauthorized
from service.responses import JSONBytesResponse
from service.routes.openapi import inline_refs
from service.security import presented_key

router = APIRouter(prefix="/v2/repository", tags=["V2 protocol"])
Body = TypeVar("Body", bound=BaseModel)


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    ready: bool = Field(default=False, description="true: only the versions that are READY.")


class LoadParameters(BaseModel):
    model_config = ConfigDict(extra="allow")

    version: str | int | None = Field(
        default=None, description="The version to serve; left out: the newest complete one on disk."
    )


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    parameters: LoadParameters = Field(default_factory=LoadParameters)


async def require_admin(request: Request, settings: SettingsDep) -> None:
    keys = settings.admin_key_set()
    if not keys:
        raise Forbidden(
            "loading and unloading models is off: the service has no admin key; set RNNSERVE_ADMIN_KEYS "
            "(or RNNSERVE_ADMIN_KEYS_FILE) and send one as `Authorization: Bearer <key>` or `X-API-Key`"
        )
    given = presented_key(request.scope)
    if not given:
        raise Unauthorized(
            "loading and unloading models needs an admin key: send it as `Authorization: Bearer <key>` or "
            "`X-API-Key: <key>`"
        )
    matches = [hmac.compare_digest(given.encode(), key.encode()) for key in sorted(keys)]
    if not any(matches):
        raise Forbidden(
            "this key is not an admin key: loading and unloading models needs one of RNNSERVE_ADMIN_KEYS"
        )


AdminDep = Annotated[None, Depends(require_admin)]
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The version could not be loaded; what was served still is. `error` says why."},
    401: {"description": "No admin key, or not one the service knows"},
    403: {"description": "Not an admin key, or the service has no admin key (the calls are off)"},
    404: {"description": "No such model in the repository"},
    500: {"description": "Some process of the service did not apply the change; `error` names it"},
}


def read_body(raw: bytes, schema: type[Body]) -> Body:
    """A call's JSON body, whatever its Content-Type (tritonclient sends none); an empty one is `{}`."""
    try:
        return schema.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        problems = [{"loc": ".".join(map(str, e["loc"])) or "body", "msg": e["msg"]} for e in exc.errors()]
        raise InvalidInput.listing(problems) from None


def documented(schema: type[BaseModel]) -> dict[str, Any]:
    content = {"application/json": {"schema": inline_refs(schema.model_json_schema())}}
    return {"requestBody": {"required": False, "content": content}}


@router.post(
    "/index",
    summary="Every model version and its state (Triton's repository index)",
    responses={400: {"description": 'The body is not `{}` or `{"ready": true|false}`'}},
    openapi_extra=documented(IndexRequest),
)
async def repository_index(request: Request, repository: RepositoryDep) -> JSONBytesResponse:
    body = read_body(await request.body(), IndexRequest)
    return JSONBytesResponse(await repository.index(ready_only=body.ready))


@router.post(
    "/models/{model_name}/load",
    summary="Serve a model version, no restart",
    responses=ERRORS,
    openapi_extra=documented(LoadRequest),
)
async def load(
    model_name: str, request: Request, repository: RepositoryDep, _: AdminDep
) -> JSONBytesResponse:
    version = read_body(await request.body(), LoadRequest).parameters.version
    if version is not None and not str(version).strip():
        raise InvalidInput("parameters.version is empty: name a version, or leave it out for the newest")
    # A change once started runs to its end, even if the caller goes away meanwhile.
    change = repository.load(model_name, None if version is None else str(version))
    return JSONBytesResponse(await asyncio.shield(change))


@router.post("/models/{model_name}/unload", summary="Stop serving a model", responses=ERRORS)
async def unload(model_name: str, repository: RepositoryDep, _: AdminDep) -> JSONBytesResponse:
    return JSONBytesResponse(await asyncio.shield(repository.unload(model_name)))
