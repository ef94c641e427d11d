"""Image files to MNIST-style inputs: MNIST itself comes back unchanged, and digits photographed the
other way round, bigger, in colour or off-centre still read as the model's input should."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.errors import InvalidInput
from service.imaging import image_to_pixels
from service.repository import locate
from service.runtimes import Runtime, load_runtime


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digit_runtime(models_dir: Path) -> Runtime:
    return load_runtime(locate(models_dir, "digit_lstm", "onnx"), "onnx", "cpu", threads=1)


def classify(runtime: Runtime, images: list[np.ndarray]) -> np.ndarray:
    probabilities = runtime.run({"pixels": np.stack(images).astype(np.float32)})["probabilities"]
    return np.asarray(probabilities.argmax(axis=1))


def test_an_mnist_image_saved_as_png_comes_back_as_it_was(
    mnist_test_set: tuple[np.ndarray, np.ndarray],
) -> None:
    images, _ = mnist_test_set
    unchanged = sum(
        np.array_equal(image_to_pixels(encode(Image.fromarray(image), "PNG")), image)
        for image in images[:300]
    )
    # The rest differ by a one-pixel shift: MNIST rounded their centre of mass the other way.
    assert unchanged >= 0.85 * 300


VARIANTS: dict[str, Callable[[np.ndarray], bytes]] = {
    "dark on light, 4× larger, RGB JPEG": lambda a: encode(
        Image.fromarray(255 - a).resize((112, 112), Image.Resampling.BICUBIC).convert("RGB"),
        "JPEG",
        quality=85,
    ),
    "dark on light, 2× larger, BMP": lambda a: encode(
        Image.fromarray(255 - a).resize((56, 56), Image.Resampling.BILINEAR), "BMP"
    ),
    "off-centre in a wide margin, 3× larger, WebP": lambda a: encode(
        Image.fromarray(np.pad(a, ((5, 40), (30, 10)))).resize((204, 249)), "WEBP", quality=90
    ),
    "black strokes on a transparent canvas, PNG": lambda a: encode(
        Image.merge("LA", (Image.new("L", (28, 28), 0), Image.fromarray(a))), "PNG"
    ),
    "16-bit grey PNG": lambda a: encode(Image.fromarray(a.astype(np.uint16) * 257), "PNG"),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_digits_in_other_files_read_as_mnist_does(
    variant: str, digit_runtime: Runtime, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    sample = slice(0, 200)
    from_files = [image_to_pixels(VARIANTS[variant](image)) for image in images[sample]]
    for pixels in from_files:
        assert pixels.shape == (28, 28) and pixels.dtype == np.float32
        assert pixels.min() >= 0 and pixels.max() <= 255
    accuracy = float((classify(digit_runtime, from_files) == labels[sample]).mean())
    raw_accuracy = float((classify(digit_runtime, list(images[sample])) == labels[sample]).mean())
    assert accuracy >= raw_accuracy - 0.03, (accuracy, raw_accuracy)


def test_the_digit_is_scaled_into_a_20_pixel_box_and_centred_by_mass() -> None:
    canvas = np.zeros((300, 500), dtype=np.uint8)
    canvas[40:140, 350:400] = 255  # a 100×50 bar far from the centre
    pixels = image_to_pixels(encode(Image.fromarray(canvas), "PNG"))
    rows, cols = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    assert rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 == 10
    ys, xs = np.indices(pixels.shape)
    mass = pixels.sum()
    assert abs((ys * pixels).sum() / mass - 14) <= 0.5
    assert abs((xs * pixels).sum() / mass - 14) <= 0.5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "image: empty"),
        (b"GIF89a" + b"\0" * 40, "not a PNG, JPEG, BMP or WebP"),
        (encode(Image.new("L", (40, 40), 255), "PNG"), "holds no digit"),
        (encode(Image.new("RGB", (40, 40), (0, 0, 0)), "JPEG"), "holds no digit"),
    ],
)
def test_files_without_a_readable_digit_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        image_to_pixels(data)
