"""Whatever a client sends, the answer is a result or an error that says what to fix: never a 500.

Hypothesis generates bodies around the contract (right field names, wrong shapes, types and values,
NaN, huge numbers, random bytes as images) and sends them to the real app."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

if TYPE_CHECKING:
    from conftest import ServeApp

FIELDS = ["pixels", "image", "inputs", "series", "horizon", "levels", "file", "x"]

numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 255),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8))
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.dictionaries(st.sampled_from(FIELDS), children, max_size=4)
    ),
    max_leaves=30,
)


@st.composite
def image_texts(draw: st.DrawFn) -> str:
    """Base64 of random bytes, or of a small random image in some format."""
    if draw(st.booleans()):
        return base64.b64encode(draw(st.binary(max_size=64))).decode()
    side = draw(st.integers(1, 40))
    pixels = draw(st.lists(st.integers(0, 255), min_size=side * side, max_size=side * side))
    buffer = io.BytesIO()
    Image.fromarray(np.array(pixels, dtype=np.uint8).reshape(side, side)).save(
        buffer, format=draw(st.sampled_from(["PNG", "BMP", "JPEG", "WEBP"]))
    )
    return base64.b64encode(buffer.getvalue()).decode()


pixel_grids = st.one_of(
    st.lists(numbers, min_size=780, max_size=790),
    st.lists(st.lists(numbers, min_size=27, max_size=29), min_size=27, max_size=29),
)
digit_inputs = st.one_of(
    st.fixed_dictionaries({"pixels": pixel_grids}),
    st.fixed_dictionaries({"image": image_texts()}),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
)
digit_bodies = st.one_of(
    digit_inputs, st.fixed_dictionaries({"inputs": st.lists(digit_inputs, max_size=3)}), json_values
)
forecast_inputs = st.fixed_dictionaries(
    {
        "series": st.lists(numbers, min_size=0, max_size=300),
        "horizon": st.one_of(st.integers(-5, 200), numbers),
    },
    optional={"levels": st.lists(numbers, max_size=4)},
)
forecast_bodies = st.one_of(
    forecast_inputs, st.fixed_dictionaries({"inputs": st.lists(forecast_inputs, max_size=3)}), json_values
)


@pytest.fixture
async def fuzzed(serve: ServeApp) -> AsyncIterator[httpx.AsyncClient]:
    """One app for all the examples of a test."""
    async with serve(max_inputs_per_request=2) as (_, client):
        yield client


async def check(client: httpx.AsyncClient, path: str, body: Any) -> None:
    response = await client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail


fuzz = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@fuzz
@given(body=digit_bodies)
async def test_any_digit_body_gets_an_answer_or_a_clear_422(fuzzed: httpx.AsyncClient, body: Any) -> None:
    await check(fuzzed, "/predict/digit", body)


@fuzz
@given(body=forecast_bodies)
async def test_any_forecast_body_gets_an_answer_or_a_clear_422(fuzzed: httpx.AsyncClient, body: Any) -> None:
    await check(fuzzed, "/forecast", body)


@fuzz
@given(data=st.one_of(st.binary(max_size=200), image_texts().map(base64.b64decode)))
async def test_any_uploaded_bytes_get_an_answer_or_a_clear_422(
    fuzzed: httpx.AsyncClient, data: bytes
) -> None:
    response = await fuzzed.post(
        "/predict/digit", files={"file": ("upload", data, "application/octet-stream")}
    )
    assert response.status_code in (200, 422), response.text
