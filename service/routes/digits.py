"""POST /predict/digit: one image or many, as pixels, base64 image files or a multipart upload."""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from service.deps import DigitClassifierDep, SettingsDep
from service.errors import InvalidInput
from service.imaging import decode_base64, image_to_pixels
from service.responses import JSONBytesResponse
from service.routes.common import check_count, unless_disconnected
from service.schemas import (
    ERROR_RESPONSES,
    DigitInput,
    DigitPrediction,
    DigitPredictions,
    DigitRequest,
    openapi_request_body,
    parse_body,
)

router = APIRouter(tags=["predictions"])


@router.post(
    "/predict/digit",
    summary="Classify handwritten digits",
    description="One image as `pixels` (28×28 or 784 raw values, white on black) or `image` (base64 "
    "PNG/JPEG/BMP/WebP), many as `inputs`, or a multipart upload of one file in field `file`.",
    response_model=DigitPrediction | DigitPredictions,
    responses=ERROR_RESPONSES,
    openapi_extra=openapi_request_body(DigitRequest, with_upload=True),
)
async def predict_digit(
    request: Request, classifier: DigitClassifierDep, settings: SettingsDep
) -> JSONBytesResponse:
    images, many = await read_images(request, settings.max_inputs_per_request)
    predictions = await unless_disconnected(request, classifier.classify(images))
    return JSONBytesResponse({"predictions": predictions} if many else predictions[0])


async def read_images(request: Request, max_inputs: int) -> tuple[list[np.ndarray], bool]:
    """The request's images as 28×28 float32 pixels, and whether it asked for a list of answers."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return [await asyncio.to_thread(image_to_pixels, await read_upload(request))], False
    body = parse_body(DigitRequest, await request.body())
    items = body.items()
    check_count(len(items), max_inputs)
    many = body.inputs is not None
    if all(item.pixels is not None for item in items):
        return [item.pixels for item in items if item.pixels is not None], many
    # Image files take a while to decode: keep that off the event loop.
    return await asyncio.to_thread(to_pixels, items, many), many


def to_pixels(items: list[DigitInput], many: bool) -> list[np.ndarray]:
    """Each input's pixels, decoding its image file if it sent one; an error names the input."""
    images = []
    for index, item in enumerate(items):
        if item.pixels is not None:
            images.append(item.pixels)
            continue
        assert item.image is not None
        try:
            images.append(image_to_pixels(decode_base64(item.image)))
        except InvalidInput as exc:
            raise InvalidInput(f"inputs[{index}].{exc.message}" if many else exc.message) from None
    return images


async def read_upload(request: Request) -> bytes:
    """The bytes of the multipart field `file`."""
    try:
        form = await request.form(max_files=1, max_fields=16)
    except HTTPException as exc:  # Starlette's answer to a malformed multipart body
        raise InvalidInput(
            f"the multipart body could not be read ({exc.detail}): upload one file in field `file`, "
            "e.g. curl -F file=@digit.png"
        ) from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput(
            "the multipart body has no file in field `file`: upload the image as "
            "`file`, e.g. curl -F file=@digit.png"
        )
    try:
        return await upload.read()
    finally:
        await form.close()
