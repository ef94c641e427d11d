"""rnnserve-client: a Python client for the rnnserve API (digit predictions and forecasts).

    from rnnserve_client import Client

    with Client("http://127.0.0.1:8000") as client:
        client.predict_digit("digit.png").digit
        client.forecast([0, 0.4, 0.7, ...], horizon=8).forecast

`AsyncClient` has the same calls, to be awaited. Errors are in `rnnserve_client.errors`, the answers'
types in `rnnserve_client.types`; both are re-exported here.
"""

from rnnserve_client._client import AsyncClient, Client
from rnnserve_client._version import __version__
from rnnserve_client.errors import (
    ApiError,
    AuthenticationError,
    ErrorItem,
    InputError,
    InvalidInputError,
    OverloadedError,
    QueueTimeoutError,
    RnnserveError,
    ServiceUnavailableError,
    TransportError,
)
from rnnserve_client.types import (
    Batching,
    DigitPrediction,
    Forecast,
    ForecastInput,
    Health,
    Interval,
    ModelChange,
    ModelInfo,
    ModelListing,
    RepositoryEntry,
)

__all__ = [
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "Batching",
    "Client",
    "DigitPrediction",
    "ErrorItem",
    "Forecast",
    "ForecastInput",
    "Health",
    "InputError",
    "Interval",
    "InvalidInputError",
    "ModelChange",
    "ModelInfo",
    "ModelListing",
    "OverloadedError",
    "QueueTimeoutError",
    "RepositoryEntry",
    "RnnserveError",
    "ServiceUnavailableError",
    "TransportError",
    "__version__",
]
