"""Every setting of the service, read once from `RNNSERVE_*` environment variables.

`Settings` is the only place that reads the environment; everything else receives a `Settings` (or a
part of it) as an argument.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024
MAX_AUTO_WORKERS = 4


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0))


def resolved_threads(threads: int) -> int:
    """A count of model threads with 0 ("let the runtime decide") resolved to the usable cores, as ONNX
    Runtime resolves it."""
    return threads or usable_cores()


def default_model_dir() -> Path:
    """The checkout's `models/` when the package runs from a source tree, else `./models`."""
    checkout = Path(__file__).resolve().parent.parent / "models"
    return checkout if checkout.is_dir() else Path("models")


class BatchingOverride(BaseModel):
    """Batching settings for one model; a field left out falls back to the global setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int | None = Field(default=None, ge=1)
    max_delay_ms: float | None = Field(default=None, ge=0)
    max_queue_size: int | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class BatchSettings:
    """The batching settings in force for one model: what its `Batcher` follows."""

    max_batch_size: int
    max_delay_ms: float
    max_queue_size: int
    queue_timeout_s: float
    failures_before_unready: int = 5
    probe_interval_s: float = 5.0


class Settings(BaseSettings):
    """The service's settings; each field `x` is read from the environment variable `RNNSERVE_X`."""

    model_config = SettingsConfigDict(
        env_prefix="RNNSERVE_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    host: str = Field(default="127.0.0.1", description="Address uvicorn binds to.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port uvicorn listens on.")
    model_dir: Path = Field(
        default_factory=default_model_dir,
        description="Model repository holding <name>/<version>/ folders; the newest version is served.",
    )
    digit_model: str = Field(
        default="digit_lstm", description='Model behind POST /predict/digit when a request names no "model".'
    )
    forecast_model: str = Field(
        default="series_gru", description='Model behind POST /forecast when a request names no "model".'
    )
    models: str = Field(
        default="*",
        description="The models served besides digit_model and forecast_model, each of the task its "
        'metadata names, for requests that name them ("model"): * every model in model_dir; or a '
        "comma-separated list; empty: none.",
    )
    backend: Literal["onnx", "torchscript"] = Field(
        default="onnx", description="onnx (ONNX Runtime) or torchscript (needs torch installed)."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto picks CUDA when the runtime can use a GPU, else the CPU."
    )
    precision: Literal["auto", "fp32", "int8"] = Field(
        default="auto",
        description="Which graph serves a model that has an int8 variant (ONNX only). auto: int8 on the CPU "
        "where its measured accuracy is at most 0.1 point below the float graph's, its calibration kept, "
        "its answers free of their batch and it is faster; float on a GPU. fp32: always float. int8: the "
        "int8 variant wherever there is one.",
    )
    threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads per model call (ONNX Runtime intra-op threads, torch threads); "
        "0 lets the runtime decide.",
    )
    max_batch_size: int = Field(default=64, ge=1, description="Most inputs merged into one model call.")
    max_delay_ms: float = Field(
        default=0.0,
        ge=0,
        description="Extra wait for a batch to fill, counted from its oldest input. 0: a free model "
        "starts at once, and inputs that arrive while it runs go together in the next call.",
    )
    max_queue_size: int = Field(
        default=1024, ge=1, description="Inputs that may wait per model; beyond it requests get 429."
    )
    queue_timeout_s: float = Field(
        default=30.0, gt=0, description="An input still queued after this long gets 504."
    )
    model_batching: dict[str, BatchingOverride] = Field(
        default_factory=dict,
        description="Per-model overrides of max_batch_size, max_delay_ms and max_queue_size, e.g. "
        'RNNSERVE_MODEL_BATCHING=\'{"sine_gru": {"max_delay_ms": 2}}\' or '
        "RNNSERVE_MODEL_BATCHING__SINE_GRU__MAX_DELAY_MS=2.",
    )
    model_versions: dict[str, str] = Field(
        default_factory=dict,
        description="The version to serve of each model named here, e.g. "
        'RNNSERVE_MODEL_VERSIONS=\'{"sine_gru": "1"}\'; a model not named serves its newest version.',
    )
    max_body_bytes: int = Field(default=8 * MIB, ge=1, description="Larger request bodies get 413.")
    max_inputs_per_request: int = Field(
        default=256, ge=1, description='Most entries in one request\'s "inputs" list.'
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="The least severe log records written (case does not matter)."
    )
    log_format: Literal["json", "text"] = Field(
        default="text", description="json: one JSON object per line; text: one readable line per record."
    )
    shutdown_timeout_s: int = Field(
        default=10, ge=1, description="How long a stopping server waits for requests in flight."
    )
    drain_s: float = Field(
        default=5.0,
        ge=0,
        description="After SIGTERM, how long the service keeps answering (not ready, Connection: close) "
        "before it stops accepting connections: time for a load balancer to notice.",
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="HTTP worker processes; 0: one per CPU core this process may use, at most "
        f"{MAX_AUTO_WORKERS}. Several use more cores for parsing and answering; see `engine` for where "
        "their models run.",
    )
    engine: Literal["auto", "inline", "process"] = Field(
        default="auto",
        description="Where the models run. inline: in each HTTP worker, which batches its own requests. "
        "process: in one model engine process that batches the inputs of every worker together, the "
        "way to keep one GPU busy from several workers. auto: process with several workers on a GPU, "
        "else inline.",
    )
    api_keys: str = Field(
        default="",
        description="Comma-separated API keys; with none here nor in api_keys_file, the service is open.",
    )
    api_keys_file: Path | None = Field(
        default=None, description="A file with one API key per line (e.g. a mounted secret)."
    )
    admin_keys: str = Field(
        default="",
        description="Comma-separated admin keys, for the repository calls that load and unload models "
        "(POST /v2/repository/models/{name}/load|unload); with none here nor in admin_keys_file, those "
        "calls are off (403). An admin key is also an API key.",
    )
    admin_keys_file: Path | None = Field(
        default=None, description="A file with one admin key per line (e.g. a mounted secret)."
    )
    model_poll_s: float = Field(
        default=0.0,
        ge=0,
        description="How often to look in model_dir for new versions and serve each once its folder is "
        "complete (its files match metadata.json's checksums); 0: never (SIGHUP looks once).",
    )
    metrics_require_key: bool = Field(default=False, description="true: /metrics needs an API key too.")
    cors_origins: str = Field(
        default="",
        description='Comma-separated origins that browsers may call the API from ("*" for any); '
        "empty: none (no CORS headers).",
    )
    failures_before_unready: int = Field(
        default=5,
        ge=1,
        description="After this many model calls in a row have failed, the model turns not ready (503) "
        "and is probed in the background until a call succeeds again.",
    )
    probe_interval_s: float = Field(default=5.0, gt=0, description="How often a failing model is probed.")
    # Set by the server for the processes it starts, not by users.
    engine_address: str = Field(
        default="", description="Internal: the model engine's ZeroMQ address, for an HTTP worker."
    )
    multiprocess_dir: Path | None = Field(
        default=None, description="Internal: where every process of the service writes its metrics."
    )
    control_dir: Path | None = Field(
        default=None, description="Internal: where the processes of the service agree on their models."
    )
    gpu: bool | None = Field(
        default=None, description="Internal: whether the models run on a GPU (None: not yet asked)."
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _queues_hold_a_whole_request(self) -> Settings:
        for name in [None, *self.model_batching]:
            queue = self.batching_for(name).max_queue_size if name else self.max_queue_size
            if queue < self.max_inputs_per_request:
                where = f"model_batching.{name}.max_queue_size" if name else "max_queue_size"
                raise ValueError(
                    f"{where} ({queue}) is smaller than max_inputs_per_request "
                    f"({self.max_inputs_per_request}): a full request could never be queued; "
                    "raise the queue size or lower the per-request limit"
                )
        return self

    @model_validator(mode="after")
    def _one_model_per_task(self) -> Settings:
        if self.digit_model == self.forecast_model:
            raise ValueError(
                f"digit_model and forecast_model both name {self.digit_model!r}: a model serves one task; "
                "set RNNSERVE_DIGIT_MODEL and RNNSERVE_FORECAST_MODEL to different models"
            )
        return self

    @model_validator(mode="after")
    def _int8_needs_onnx(self) -> Settings:
        if self.precision == "int8" and self.backend != "onnx":
            raise ValueError(
                f"precision int8 needs the onnx backend (the int8 variants are ONNX graphs), but backend is "
                f"{self.backend}: set RNNSERVE_BACKEND=onnx or RNNSERVE_PRECISION=auto"
            )
        return self

    @model_validator(mode="after")
    def _readable_key_file(self) -> Settings:
        self.api_key_set()
        self.admin_key_set()
        return self

    def extra_models(self, repository: list[str]) -> list[str]:
        """The models to serve besides the two defaults, given the names the repository holds."""
        wanted = repository if self.models.strip() == "*" else [n.strip() for n in self.models.split(",")]
        defaults = {self.digit_model, self.forecast_model}
        return [name for name in dict.fromkeys(wanted) if name and name not in defaults]

    def api_key_set(self) -> frozenset[str]:
        """Every API key from api_keys and api_keys_file; empty: the service is open."""
        return read_keys(self.api_keys, self.api_keys_file, "api_keys_file")

    def admin_key_set(self) -> frozenset[str]:
        """Every admin key from admin_keys and admin_keys_file; empty: the repository calls are off."""
        return read_keys(self.admin_keys, self.admin_keys_file, "admin_keys_file")

    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]

    def engine_mode(self, gpu_available: bool) -> Literal["inline", "process"]:
        """`engine` with auto resolved: `gpu_available` says whether the models would run on a GPU."""
        if self.engine != "auto":
            return self.engine
        return "process" if self.worker_count() > 1 and gpu_available and self.device != "cpu" else "inline"

    def model_threads(self) -> int:
        """`threads` with 0 resolved to the cores this process may use, as ONNX Runtime resolves it."""
        return resolved_threads(self.threads)

    def worker_threads(self) -> int:
        """Threads per model call where each worker runs its own models: `threads`, or with 0 the usable
        cores divided among the workers, so that their model calls share the cores rather than
        oversubscribe them."""
        return self.threads or max(1, usable_cores() // self.worker_count())

    def worker_count(self) -> int:
        """`workers` with 0 resolved to the number of usable cores (at most MAX_AUTO_WORKERS)."""
        return self.workers or max(1, min(usable_cores(), MAX_AUTO_WORKERS))

    def batching_for(self, model: str) -> BatchSettings:
        """The batching settings for `model`: its overrides on top of the global ones."""
        override = self.model_batching.get(model, BatchingOverride())
        return BatchSettings(
            max_batch_size=override.max_batch_size or self.max_batch_size,
            max_delay_ms=self.max_delay_ms if override.max_delay_ms is None else override.max_delay_ms,
            max_queue_size=override.max_queue_size or self.max_queue_size,
            queue_timeout_s=self.queue_timeout_s,
            failures_before_unready=self.failures_before_unready,
            probe_interval_s=self.probe_interval_s,
        )


def read_keys(listed: str, file: Path | None, setting: str) -> frozenset[str]:
    """The keys of a comma-separated list and of a file of one key per line."""
    keys = [key.strip() for key in listed.split(",")]
    if file is not None:
        try:
            keys += [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{setting} {file} cannot be read: {exc}") from None
    return frozenset(key for key in keys if key)
