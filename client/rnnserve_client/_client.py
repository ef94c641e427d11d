"""The calls of the rnnserve API: `Client` (sync) and `AsyncClient` (async), alike but for `await`.

Everything but the sending lives in `_ClientBase` and the module's functions: the bodies come from
`_inputs`, the answers become the dataclasses of `types`, the retries happen in `_transport`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from rnnserve_client._inputs import Body, DigitImage, digit_body, digits_body, forecast_body, forecasts_body
from rnnserve_client._transport import AsyncTransport, RetryPolicy, SyncTransport
from rnnserve_client.errors import ApiError
from rnnserve_client.types import (
    DEFAULT_LEVELS,
    DigitPrediction,
    Forecast,
    ForecastInput,
    Health,
    ModelChange,
    ModelListing,
    RepositoryEntry,
)

DIGITS_PATH = "/predict/digit"
FORECAST_PATH = "/forecast"
REPOSITORY_PATH = "/v2/repository"


class _ClientBase:
    """Settings and request headers shared by both clients."""

    def __init__(self, request_timeout_ms: float | None) -> None:
        if request_timeout_ms is not None and not request_timeout_ms > 0:
            raise ValueError(
                f"request_timeout_ms is {request_timeout_ms!r}: pass a positive number of milliseconds "
                "(how long an input may wait in the service's queue), or None"
            )
        self.request_timeout_ms = request_timeout_ms

    def _headers(self, body: Body) -> dict[str, str]:
        """The headers of a prediction request carrying `body`."""
        headers = {"Content-Type": body.content_type}
        if self.request_timeout_ms is not None:
            headers["X-Request-Timeout-Ms"] = f"{self.request_timeout_ms:g}"
        return headers


def _model_query(model: str | None) -> dict[str, str] | None:
    """`?model=<name>`: the model to answer (GET /models lists them); None for the task's default."""
    return None if model is None else {"model": model}


def _json_of(response: httpx.Response) -> Any:
    """The answer's JSON; an `ApiError` when it is not JSON (another service, or a proxy's page)."""
    try:
        return response.json()
    except ValueError:
        raise ApiError(
            response.status_code,
            f"the answer to {response.request.method} {response.request.url} is not JSON "
            f"({response.headers.get('content-type', 'no content type')}): is an rnnserve service there?",
            response.text[:500],
        ) from None


def _digits(response: httpx.Response, many: bool) -> list[DigitPrediction]:
    data = _json_of(response)
    answers = data["predictions"] if many else [data]
    return [DigitPrediction.from_json(answer) for answer in answers]


def _forecasts(response: httpx.Response, many: bool) -> list[Forecast]:
    data = _json_of(response)
    answers = data["forecasts"] if many else [data]
    return [Forecast.from_json(answer) for answer in answers]


def _load_body(version: str | int | None) -> bytes:
    return json.dumps({} if version is None else {"parameters": {"version": str(version)}}).encode()


def _index(response: httpx.Response) -> list[RepositoryEntry]:
    return [RepositoryEntry.from_json(entry) for entry in _json_of(response)]


def _health(live: httpx.Response, ready: httpx.Response) -> Health:
    return Health.from_json(_json_of(live), _json_of(ready), ready.status_code)


class Client(_ClientBase):
    """A client of one rnnserve service, e.g. `Client("http://127.0.0.1:8000", api_key="...")`.

    `timeout`: seconds to wait for each answer. `retries`: attempts after the first on 429, 503 and
    connection failures, waiting `backoff_s`, then twice that and so on (with jitter), or the service's
    `Retry-After`, never longer than `max_wait_s` at a time. `request_timeout_ms`: how long an input may
    wait in the service's queue (`X-Request-Timeout-Ms`) before it answers 504. `transport`: an httpx
    transport to send through (TLS settings, proxies, tests). Use it as a context manager, or `close()` it.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_wait_s: float = 30.0,
        request_timeout_ms: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(request_timeout_ms)
        policy = RetryPolicy(retries, backoff_s, max_wait_s)
        self._transport = SyncTransport(base_url, api_key, timeout, policy, transport)

    def predict_digit(self, image: DigitImage, model: str | None = None) -> DigitPrediction:
        """Classify one image: a file path, an image file's bytes (PNG, JPEG, WebP, BMP), a PIL image, or
        a numpy array of 28×28 (or 784) raw pixels 0–255, white digit on black. `model` names the model
        to answer (GET /models lists them); None for the service's default."""
        return self._predict(digit_body(image), model)[0]

    def predict_digits(self, images: Iterable[DigitImage], model: str | None = None) -> list[DigitPrediction]:
        """Classify many images in one request (any mix of the kinds `predict_digit` takes, or an array of
        shape (n, 28, 28)); the answers are in the same order."""
        return self._predict(digits_body(images), model)

    def forecast(
        self,
        series: Sequence[float | None] | Any,
        horizon: int,
        levels: Sequence[float] = DEFAULT_LEVELS,
        model: str | None = None,
        quantiles: Sequence[float] | None = None,
        season_length: int | None = None,
    ) -> Forecast:
        """Forecast the next `horizon` values of `series` (numbers oldest first, or a 1-D numpy array;
        None or NaN for a missing value), with a central interval for each level in percent and, if
        asked, the forecast at each of `quantiles` (probabilities, e.g. (0.1, 0.9)). `season_length`:
        the season's length in steps (1: no seasonality), for a model that takes one (its metadata gives
        config.max_season); None, the default, sends none and the model finds the period itself."""
        body = forecast_body(ForecastInput(series, horizon, levels, quantiles, season_length))
        return _forecasts(self._post(FORECAST_PATH, body, model), many=False)[0]

    def forecast_many(
        self, inputs: Iterable[ForecastInput], model: str | None = None, season_length: int | None = None
    ) -> list[Forecast]:
        """Forecast many series in one request, each with its own horizon, levels and season length; in
        order. `season_length` goes with every input whose own `season_length` is None."""
        body = forecasts_body(inputs, season_length)
        return _forecasts(self._post(FORECAST_PATH, body, model), many=True)

    def health(self) -> Health:
        """Whether the service is live and ready, with each model's state. A service that is up but not
        ready answers `ready=False`; one that cannot be reached raises `TransportError`."""
        live = self._transport.request("GET", "/health/live")
        ready = self._transport.request("GET", "/health/ready", accepted={503})
        return _health(live, ready)

    def models(self) -> ModelListing:
        """The models served: versions, metadata, backend, device and batching settings."""
        return ModelListing.from_json(_json_of(self._transport.request("GET", "/models")))

    def repository_index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        """Every version of every model in the service's repository, with its state and, when not
        READY, why."""
        body = json.dumps({"ready": ready_only}).encode()
        return _index(self._transport.request("POST", REPOSITORY_PATH + "/index", content=body))

    def load_model(self, name: str, version: str | int | None = None) -> ModelChange:
        """Serve version `version` of model `name` (None: the newest in the repository), in every process
        of the service, without a restart; a model not served before is added. Needs an admin key
        (`Client(api_key=<admin key>)`). Raises `ApiError` (400) with the reason if the version cannot
        be loaded, in which case the version served before still is."""
        path = f"{REPOSITORY_PATH}/models/{name}/load"
        return ModelChange.from_json(
            _json_of(self._transport.request("POST", path, content=_load_body(version)))
        )

    def unload_model(self, name: str) -> ModelChange:
        """Stop serving model `name` (its requests in flight finish first); needs an admin key."""
        path = f"{REPOSITORY_PATH}/models/{name}/unload"
        return ModelChange.from_json(_json_of(self._transport.request("POST", path)))

    def _predict(self, body: Body, model: str | None) -> list[DigitPrediction]:
        return _digits(self._post(DIGITS_PATH, body, model), body.many)

    def _post(self, path: str, body: Body, model: str | None) -> httpx.Response:
        return self._transport.request(
            "POST", path, content=body.content, headers=self._headers(body), params=_model_query(model)
        )

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """The same calls as `Client`, to be awaited; the same constructor, with an async `transport`.
    Use it as an async context manager, or `await aclose()` it."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_wait_s: float = 30.0,
        request_timeout_ms: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(request_timeout_ms)
        policy = RetryPolicy(retries, backoff_s, max_wait_s)
        self._transport = AsyncTransport(base_url, api_key, timeout, policy, transport)

    async def predict_digit(self, image: DigitImage, model: str | None = None) -> DigitPrediction:
        """See `Client.predict_digit`."""
        return (await self._predict(digit_body(image), model))[0]

    async def predict_digits(
        self, images: Iterable[DigitImage], model: str | None = None
    ) -> list[DigitPrediction]:
        """See `Client.predict_digits`."""
        return await self._predict(digits_body(images), model)

    async def forecast(
        self,
        series: Sequence[float | None] | Any,
        horizon: int,
        levels: Sequence[float] = DEFAULT_LEVELS,
        model: str | None = None,
        quantiles: Sequence[float] | None = None,
        season_length: int | None = None,
    ) -> Forecast:
        """See `Client.forecast`."""
        body = forecast_body(ForecastInput(series, horizon, levels, quantiles, season_length))
        return _forecasts(await self._post(FORECAST_PATH, body, model), many=False)[0]

    async def forecast_many(
        self, inputs: Iterable[ForecastInput], model: str | None = None, season_length: int | None = None
    ) -> list[Forecast]:
        """See `Client.forecast_many`."""
        body = forecasts_body(inputs, season_length)
        return _forecasts(await self._post(FORECAST_PATH, body, model), many=True)

    async def health(self) -> Health:
        """See `Client.health`."""
        live = await self._transport.request("GET", "/health/live")
        ready = await self._transport.request("GET", "/health/ready", accepted={503})
        return _health(live, ready)

    async def models(self) -> ModelListing:
        """See `Client.models`."""
        return ModelListing.from_json(_json_of(await self._transport.request("GET", "/models")))

    async def repository_index(self, ready_only: bool = False) -> list[RepositoryEntry]:
        """See `Client.repository_index`."""
        body = json.dumps({"ready": ready_only}).encode()
        return _index(await self._transport.request("POST", REPOSITORY_PATH + "/index", content=body))

    async def load_model(self, name: str, version: str | int | None = None) -> ModelChange:
        """See `Client.load_model`."""
        path = f"{REPOSITORY_PATH}/models/{name}/load"
        answer = await self._transport.request("POST", path, content=_load_body(version))
        return ModelChange.from_json(_json_of(answer))

    async def unload_model(self, name: str) -> ModelChange:
        """See `Client.unload_model`."""
        path = f"{REPOSITORY_PATH}/models/{name}/unload"
        return ModelChange.from_json(_json_of(await self._transport.request("POST", path)))

    async def _predict(self, body: Body, model: str | None) -> list[DigitPrediction]:
        return _digits(await self._post(DIGITS_PATH, body, model), body.many)

    async def _post(self, path: str, body: Body, model: str | None) -> httpx.Response:
        return await self._transport.request(
            "POST", path, content=body.content, headers=self._headers(body), params=_model_query(model)
        )

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()
