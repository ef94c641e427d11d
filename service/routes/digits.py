"""POST /predict/digit: one image or many, as JSON pixels, base64 or raw image files, uint8 pixels, or
a multipart upload."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Receive, Scope

from service.codecs import (
    IMAGE_TYPES,
    MULTIPART,
    OCTET_STREAM,
    DigitItem,
    JsonBody,
    check_digit_media_type,
    digit_items_from_json,
    media_type,
    pixels_from_octets,
)
from service.errors import InvalidInput
from service.headers import header
from service.imaging import decode_base64, image_to_pixels
from service.registry import Registry
from service.routes.common import (
    DirectRoute,
    check_count,
    chosen_model,
    read_body,
    request_timeout_s,
    unless_disconnected,
)
from service.routes.openapi import BINARY_IMAGE, DigitPrediction, DigitPredictions, openapi_operation
from service.schemas import DigitRequest
from service.tasks.digits import DigitClassifier, Images


class PredictDigit(DirectRoute):
    path = "/predict/digit"
    openapi = openapi_operation(
        "Classify handwritten digits",
        "One image as JSON `pixels` (28×28 or 784 raw values, white on black) or `image` (base64 "
        "PNG/JPEG/BMP/WebP), many as `inputs`; or the image file itself as the body (Content-Type "
        "image/png, image/jpeg, image/webp or image/bmp); or n×784 uint8 pixels as "
        "application/octet-stream (row-major, white on black; answered with `predictions`); or a "
        "multipart upload of one file in field `file`.",
        DigitRequest,
        DigitPrediction | DigitPredictions,
        {
            **{kind: BINARY_IMAGE for kind in IMAGE_TYPES},
            OCTET_STREAM: BINARY_IMAGE,
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    )

    async def answer(self, scope: Scope, receive: Receive, registry: Registry) -> Any:
        registry.admit(DigitClassifier)  # before the body is read: a refusal costs next to nothing
        timeout_s = request_timeout_s(scope)
        kind = media_type(header(scope, b"content-type"))
        if kind == MULTIPART:
            upload = await read_upload(Request(scope, receive))
            classifier = registry.for_task(DigitClassifier, chosen_model(scope, None))
            images: Images = [await asyncio.to_thread(image_to_pixels, upload)]
            many = False
        else:
            images, many, classifier = await self.read_images(scope, kind, await read_body(receive), registry)
        classifier.queue.admit()
        predictions = await unless_disconnected(receive, classifier.classify(images, timeout_s))
        return {"predictions": predictions} if many else predictions[0]

    async def read_images(
        self, scope: Scope, kind: str, raw: bytes, registry: Registry
    ) -> tuple[Images, bool, DigitClassifier]:
        """A body's images, checked; whether it asked for a list of answers; and the model to answer."""
        if kind in IMAGE_TYPES or kind == OCTET_STREAM:
            classifier = registry.for_task(DigitClassifier, chosen_model(scope, None))
            if kind == OCTET_STREAM:
                count = len(raw) // (classifier.side * classifier.side)
                check_count(count, self.settings.max_inputs_per_request)
                return pixels_from_octets(raw, classifier), True, classifier
            return [await asyncio.to_thread(image_to_pixels, raw)], False, classifier
        check_digit_media_type(kind)
        body = JsonBody.read(raw)
        classifier = registry.for_task(DigitClassifier, chosen_model(scope, body.model_name()))
        items, many = digit_items_from_json(body, classifier)
        check_count(len(items), self.settings.max_inputs_per_request)
        if all(isinstance(item, np.ndarray) for item in items):
            return items, many, classifier  # type: ignore[return-value]  # every item is pixels
        # Image files take a while to decode: keep that off the event loop.
        return await asyncio.to_thread(to_pixels, items, many), many, classifier


def to_pixels(items: list[DigitItem], many: bool) -> list[np.ndarray]:
    """Each input's pixels, decoding its image file if it sent one; an error names every input at fault."""
    images, errors = [], []
    for index, item in enumerate(items):
        if isinstance(item, np.ndarray):
            images.append(item)
            continue
        try:
            images.append(image_to_pixels(decode_base64(item)))
        except InvalidInput as exc:
            for error in exc.errors or []:
                loc = error["loc"]
                errors.append({"loc": f"inputs[{index}].{loc}" if many else loc, "msg": error["msg"]})
    if errors:
        raise InvalidInput.listing(errors)
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
