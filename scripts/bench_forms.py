"""The benchmark's requests: each input form of the digit route, and a forecast, as ready-made bodies."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass

import numpy as np

DIGIT_FORMS = ("json-pixels", "base64-image", "raw-image", "octet-stream", "64-images", "64-images-json")


@dataclass(frozen=True)
class Form:
    """One way of asking: a route, a content type and a request body."""

    name: str
    route: str
    content_type: str
    body: bytes
    model: str  # the label of rnnserve's batch-size metric
    inputs: int = 1  # images (or series) in one request


def digit_image(rng: np.random.Generator) -> np.ndarray:
    """A 28×28 uint8 "1": a vertical bar, white on black."""
    image = np.zeros((28, 28), dtype=np.uint8)
    image[4:24, 12:16] = rng.integers(128, 256, size=(20, 4))
    return image


def as_bytes(body: object) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def make_forms(seed: int = 0) -> dict[str, Form]:
    """Every digit form of DIGIT_FORMS, and "forecast": a noisy sine of 256 values, horizon 32."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = digit_image(rng)
    png = io.BytesIO()
    Image.fromarray(image, mode="L").save(png, format="PNG")
    images = np.stack([digit_image(rng) for _ in range(64)])
    series = (np.sin(np.arange(256) / 8.0) + 0.1 * rng.normal(size=256)).round(4)
    json_body, octets = "application/json", "application/octet-stream"
    digit = {  # form -> (content type, body, images per request)
        "json-pixels": (json_body, {"pixels": image.tolist()}, 1),
        "base64-image": (json_body, {"image": base64.b64encode(png.getvalue()).decode()}, 1),
        "raw-image": ("image/png", png.getvalue(), 1),
        "octet-stream": (octets, image.tobytes(), 1),
        "64-images": (octets, images.tobytes(), 64),
        "64-images-json": (json_body, {"inputs": [{"pixels": i.tolist()} for i in images]}, 64),
    }
    forms = {
        name: Form(name, "/predict/digit", kind, as_bytes(body), "digit_lstm", count)
        for name, (kind, body, count) in digit.items()
    }
    forecast = {"series": series.tolist(), "horizon": 32}
    forms["forecast"] = Form("forecast", "/forecast", json_body, as_bytes(forecast), "sine_gru")
    return forms
