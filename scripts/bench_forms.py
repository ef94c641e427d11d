"""The benchmark's requests: each input form of the digit route and of the V2 protocol, and a forecast,
as ready-made bodies."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass

import numpy as np

DIGIT_FORMS = ("json-pixels", "base64-image", "raw-image", "octet-stream", "64-images", "64-images-json")
V2_FORMS = ("v2-json", "v2-binary", "v2-binary-64", "tritonclient")
V2_ROUTE = "/v2/models/digit_lstm/infer"
REST_VS_V2 = {  # each V2 form -> the REST form that sends the same images in the same encoding
    "v2-json": "json-pixels",
    "v2-binary": "octet-stream",
    "v2-binary-64": "64-images",
    "tritonclient": "octet-stream",
}
MANY_FORMS = ("64-images", "64-images-json", "v2-binary-64")  # 64 images a request
INT8_FORMS = ("json-pixels", "octet-stream", "64-images")
WORKER_FORMS = ("json-pixels", "64-images", "forecast")
GPU_FORMS = ("json-pixels", "64-images", "forecast")


@dataclass(frozen=True)
class Form:
    """One way of asking: a route, a content type, a request body and what sends it."""

    name: str
    route: str
    content_type: str
    body: bytes
    model: str  # the label of rnnserve's batch-size metric
    inputs: int = 1  # images (or series) in one request
    headers: tuple[str, ...] = ()  # extra "Name: value" headers
    driver: str = "hey"  # or "tritonclient": Triton's HTTP client sends `body` (uint8 images) itself


def digit_image(rng: np.random.Generator) -> np.ndarray:
    """A 28×28 uint8 "1": a vertical bar, white on black."""
    image = np.zeros((28, 28), dtype=np.uint8)
    image[4:24, 12:16] = rng.integers(128, 256, size=(20, 4))
    return image


def as_bytes(body: object) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def v2_binary(images: np.ndarray) -> tuple[bytes, tuple[str, ...]]:
    """A V2 request for `images` (n×28×28 uint8) in Triton's binary tensor data extension, the
    probabilities asked for as binary data too: the body and its Inference-Header-Content-Length."""
    tensor = {"binary_data_size": images.nbytes}
    pixels = {"name": "pixels", "datatype": "UINT8", "shape": list(images.shape), "parameters": tensor}
    header = {
        "inputs": [pixels],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    head = as_bytes(header)
    return head + images.tobytes(), (f"Inference-Header-Content-Length: {len(head)}",)


def v2_forms(image: np.ndarray, images: np.ndarray) -> dict[str, Form]:
    """The V2 forms: JSON tensors and binary tensors (one image, 64 images) sent by `hey`, and one
    binary image sent by tritonclient."""
    octets = "application/octet-stream"
    pixels = {"name": "pixels", "datatype": "FP32", "shape": [1, 28, 28], "data": image.ravel().tolist()}
    v2_json = {
        "inputs": [pixels],
        "outputs": [{"name": "probabilities"}],
    }
    one, one_headers = v2_binary(image[None])
    many, many_headers = v2_binary(images)
    return {
        "v2-json": Form("v2-json", V2_ROUTE, "application/json", as_bytes(v2_json), "digit_lstm"),
        "v2-binary": Form("v2-binary", V2_ROUTE, octets, one, "digit_lstm", headers=one_headers),
        "v2-binary-64": Form("v2-binary-64", V2_ROUTE, octets, many, "digit_lstm", 64, many_headers),
        "tritonclient": Form(
            "tritonclient", V2_ROUTE, octets, image[None].tobytes(), "digit_lstm", driver="tritonclient"
        ),
    }


def make_forms(seed: int = 0) -> dict[str, Form]:
    """Every form of DIGIT_FORMS and V2_FORMS, and "forecast": a noisy sine of 256 values, horizon 32,
    for the default forecaster (series_gru)."""
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
    forms |= v2_forms(image, images)
    forecast = {"series": series.tolist(), "horizon": 32}
    forms["forecast"] = Form("forecast", "/forecast", json_body, as_bytes(forecast), "series_gru")
    return forms
