"""Image files to MNIST-style inputs, made the way MNIST itself was made.

PNG, JPEG, BMP or WebP, any size and colour mode: to grey, inverted when the digit is dark on a
light background, background removed, cropped to the digit, scaled to fit a 20×20 box (aspect kept),
then placed in a 28×28 field so that its centre of mass falls on the field's centre (14, 14).
The result is raw pixel values 0–255, white digit on black: what the digit model takes.

For an MNIST image saved as a file this gives back the image itself: its background is exactly
zero, its digit already fills a 20×20 box and its centre of mass already lies within half a pixel of
the centre.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import InvalidInput


def bad_image(message: str) -> InvalidInput:
    """An image that cannot be read, as a problem of the field `image`."""
    return InvalidInput.listing([{"loc": "image", "msg": message}])


FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
MAX_PIXELS = 50_000_000
"""Larger images are refused before they are decoded (a tiny file can hold a huge image)."""
WORKING_SIDE = 1024
"""Larger images are first shrunk to this many pixels on their longer side."""
FIELD = 28
BOX = 20
CENTRE = 14.0


def decode_base64(text: str) -> bytes:
    """The bytes of a base64 image, with or without a `data:image/...;base64,` prefix."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_image(
            "not valid base64; send the file's bytes base64-encoded (e.g. `base64 -w0 digit.png`)"
        ) from None


def open_image(data: bytes) -> Image.Image:
    """Decode a PNG, JPEG, BMP or WebP file (its first frame), upright as EXIF says."""
    if not data:
        raise bad_image("empty; send the bytes of a PNG, JPEG, BMP or WebP file")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise bad_image(
                f"{width}×{height} pixels, more than the {MAX_PIXELS:,} this service decodes: "
                "send a smaller image (a digit needs only a few hundred pixels a side)"
            )
        image.load()
        return ImageOps.exif_transpose(image)
    except InvalidInput:
        raise
    except UnidentifiedImageError:
        raise bad_image(
            "not a PNG, JPEG, BMP or WebP file that can be decoded; send one of those formats"
        ) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise bad_image(f"could not be decoded ({exc}); the file is damaged or truncated") from None


def to_grey(image: Image.Image) -> np.ndarray:
    """Grey levels 0–255 as float32. Transparent areas become the background of the ink they hold."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.clip(np.asarray(image, dtype=np.float32) / 257.0, 0, 255)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.float32)
    rgba = image.convert("RGBA")
    grey = np.asarray(rgba.convert("L"), dtype=np.float32)
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    opaque = alpha > 0.5
    # Light strokes on a transparent canvas go onto black, dark ones onto white: either way, the
    # strokes stay visible.
    background = 0.0 if opaque.any() and grey[opaque].mean() > 127 else 255.0
    return grey * alpha + background * (1.0 - alpha)


def shrink(image: Image.Image) -> Image.Image:
    if max(image.size) <= WORKING_SIDE:
        return image
    scale = WORKING_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BOX)


def mnist_style(grey: np.ndarray) -> np.ndarray:
    """A grey image (any size, either polarity) as a 28×28 MNIST-style digit, float32 in 0–255."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 127:
        grey = 255.0 - grey
        border = 255.0 - border
    # What the border holds is background (and its noise); what stands above it is ink.
    background = float(np.median(border))
    noise = 3.0 * 1.4826 * float(np.median(np.abs(border - background)))
    ink = grey - background - noise
    ink[ink < 0] = 0
    peak = float(ink.max())
    if peak < 8.0:
        raise bad_image(
            "holds no digit (it is blank or has too little contrast); send a dark digit on a "
            "light background or a light digit on a dark one"
        )
    ink *= 255.0 / peak
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    digit = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = digit.shape
    if max(height, width) != BOX:
        scale = BOX / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = Image.fromarray(digit).resize(size, Image.Resampling.LANCZOS)
        digit = np.clip(np.asarray(resized, dtype=np.float32), 0, 255)
    return centre_by_mass(digit)


def centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Place `digit` (at most 28×28) in a 28×28 field with its centre of mass nearest (14, 14)."""
    ys, xs = np.indices(digit.shape)
    mass = float(digit.sum())
    top = round(CENTRE - float((ys * digit).sum()) / mass)
    left = round(CENTRE - float((xs * digit).sum()) / mass)
    # Keep the whole digit in the field even if its mass lies far off its box's centre.
    top = min(max(top, 0), FIELD - digit.shape[0])
    left = min(max(left, 0), FIELD - digit.shape[1])
    field = np.zeros((FIELD, FIELD), dtype=np.float32)
    field[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return field


def image_to_pixels(data: bytes) -> np.ndarray:
    """An image file's bytes as the digit model's input: 28×28 float32, 0–255, white on black."""
    return mnist_style(to_grey(shrink(open_image(data))))
