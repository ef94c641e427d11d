"""The binary request forms of POST /predict/digit: raw image files as the body, and n×784 uint8
pixels as application/octet-stream; on the real app with the committed model and real MNIST."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import httpx
import numpy as np
import pytest
from PIL import Image

if TYPE_CHECKING:
    from conftest import ServeApp

OCTETS = {"content-type": "application/octet-stream"}


def image_file(image: np.ndarray, format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format, **({"lossless": True} if format == "WEBP" else {}))
    return buffer.getvalue()


async def test_octet_stream_pixels_give_exactly_the_json_answers(
    api_client: httpx.AsyncClient, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    sample = images[:40]
    binary = await api_client.post("/predict/digit", content=sample.tobytes(), headers=OCTETS)
    assert binary.status_code == 200, binary.text
    as_json = await api_client.post(
        "/predict/digit", json={"inputs": [{"pixels": image.tolist()} for image in sample]}
    )
    assert binary.json() == as_json.json()
    predicted = np.array([p["digit"] for p in binary.json()["predictions"]])
    assert (predicted == labels[:40]).mean() >= 0.95


async def test_one_octet_stream_image_is_answered_as_a_list_of_one(
    api_client: httpx.AsyncClient, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    response = await api_client.post("/predict/digit", content=images[0].tobytes(), headers=OCTETS)
    assert response.status_code == 200
    (prediction,) = response.json()["predictions"]
    assert prediction["digit"] == labels[0]


@pytest.mark.parametrize(("format", "content_type"), [("PNG", "image/png"), ("BMP", "image/bmp"),
                                                      ("WEBP", "image/webp")])  # fmt: skip
async def test_a_lossless_image_file_as_the_body_equals_its_pixels(
    api_client: httpx.AsyncClient,
    mnist_test_set: tuple[np.ndarray, np.ndarray],
    format: str,
    content_type: str,
) -> None:
    images, _ = mnist_test_set
    for image in images[:5]:
        raw = await api_client.post(
            "/predict/digit", content=image_file(image, format), headers={"content-type": content_type}
        )
        pixels = await api_client.post("/predict/digit", json={"pixels": image.tolist()})
        assert raw.status_code == 200, raw.text
        assert raw.json() == pixels.json()


async def test_a_jpeg_body_is_read_like_an_uploaded_jpeg(
    api_client: httpx.AsyncClient, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    jpeg = image_file(images[3], "JPEG")
    raw = await api_client.post("/predict/digit", content=jpeg, headers={"content-type": "image/jpeg; q=0.9"})
    upload = await api_client.post("/predict/digit", files={"file": ("digit.jpg", jpeg, "image/jpeg")})
    assert raw.status_code == 200 and raw.json() == upload.json()
    assert raw.json()["digit"] == labels[3]


@pytest.mark.parametrize(
    ("case", "body", "content_type", "status", "message"),
    [
        ("empty octets", b"", "application/octet-stream", 422, "has 0 bytes: send n×784 bytes"),
        ("octets not a multiple of 784", b"\0" * 800, "application/octet-stream", 422, "has 800 bytes"),
        ("too many images", b"\0" * 784 * 9, "application/octet-stream", 422, "at most 8 per request"),
        ("an empty image", b"", "image/png", 422, "image: empty"),
        ("not an image", b"hello world", "image/png", 422, "not a PNG, JPEG, BMP or WebP"),
        (
            "a blank image",
            image_file(np.zeros((28, 28), np.uint8), "PNG"),
            "image/png",
            422,
            "holds no digit",
        ),
        ("an unsupported image type", b"GIF89a", "image/gif", 415, "image/gif is not an image type"),
    ],
)
async def test_bad_binary_bodies_get_a_4xx_that_says_what_to_fix(
    serve: ServeApp, case: str, body: bytes, content_type: str, status: int, message: str
) -> None:
    async with serve(max_inputs_per_request=8) as (_, client):
        response = await client.post("/predict/digit", content=body, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
