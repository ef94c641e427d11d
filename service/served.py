"""What every served model shares: its artifact, its input queue and its self-description.

A model is served in one of two ways. Loaded here (`load`): its runtime runs in this process, behind
its own `Batcher`. Or as a front for a model engine in another process (`remote`): this process
checks inputs and builds answers, and the engine's batcher runs the model for every front end.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Protocol, Self

from service.batching import Batcher, BatchPolicy, InputT, OutputT
from service.config import BatchSettings
from service.metrics import BatcherMetrics
from service.repository import ModelArtifact, ModelLoadError
from service.runtimes import Runtime


class InputQueue(Protocol):
    """Where a request's inputs wait for model calls: a local `Batcher`, or a model engine's."""

    def admit(self) -> None:
        """Raise `Overloaded` or `ShuttingDown` if a request would be refused now, before it is read."""

    async def submit_many(self, inputs: Sequence[Any], timeout_s: float | None = None) -> list[Any]: ...


class ServedModel(ABC, Generic[InputT, OutputT]):
    """A model behind its queue. Subclasses turn ready inputs into a batch and back."""

    task: ClassVar[str]
    input_names: ClassVar[tuple[str, ...]]
    output_names: ClassVar[tuple[str, ...]]

    def __init__(self, artifact: ModelArtifact, batching: BatchSettings) -> None:
        """Reads what the subclass needs from the artifact's metadata; `load` or `remote` attach the
        queue."""
        self.artifact = artifact
        self.batching = batching
        self._runtime: Runtime | None = None
        self._batcher: Batcher[InputT, OutputT] | None = None
        self.queue: InputQueue

    @classmethod
    def load(
        cls, artifact: ModelArtifact, runtime: Runtime, batching: BatchSettings, metrics: BatcherMetrics
    ) -> Self:
        """The model run here, by `runtime`, behind a batcher of its own (not yet started)."""
        missing = [n for n in cls.input_names if n not in runtime.input_names] + [
            n for n in cls.output_names if n not in runtime.output_names
        ]
        if missing:
            raise ModelLoadError(
                f"{artifact.file}: has inputs {runtime.input_names} and outputs {runtime.output_names}, "
                f"but {artifact.name} must have {', '.join(missing)}; re-export it"
            )
        model = cls(artifact, batching)
        model._runtime = runtime
        policy = BatchPolicy(
            max_batch_size=batching.max_batch_size,
            max_delay_s=batching.max_delay_ms / 1000,
            max_queue_size=batching.max_queue_size,
            queue_timeout_s=batching.queue_timeout_s,
            failures_before_unready=batching.failures_before_unready,
            probe_interval_s=batching.probe_interval_s,
        )
        model._batcher = Batcher(artifact.name, model.run_batch, policy, metrics, probe=model.probe)
        model.queue = model._batcher
        return model

    @classmethod
    def remote(cls, artifact: ModelArtifact, batching: BatchSettings, queue: InputQueue) -> Self:
        """A front for the model that runs elsewhere and takes its inputs through `queue`."""
        model = cls(artifact, batching)
        model.queue = queue
        return model

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError(f"model {self.name} runs in the model engine, not in this process")
        return self._runtime

    @property
    def batcher(self) -> Batcher[InputT, OutputT]:
        if self._batcher is None:
            raise RuntimeError(f"model {self.name} is batched by the model engine, not in this process")
        return self._batcher

    @abstractmethod
    def run_batch(self, inputs: list[InputT]) -> list[OutputT]:
        """One model call on a batch; blocking, run by the batcher's worker thread."""

    @abstractmethod
    def sample_input(self) -> InputT:
        """A valid input, for the warm-up."""

    def probe(self) -> None:
        """One model call on a valid input; raises if the model fails."""
        self.run_batch([self.sample_input()])

    def warm_up(self) -> None:
        """Run a single input and a full batch once, so the first requests pay no start-up cost."""
        for size in sorted({1, self.batching.max_batch_size}):
            self.run_batch([self.sample_input()] * size)

    def describe(self) -> dict[str, Any]:
        """What GET /models shows about this model."""
        return {
            "name": self.name,
            "version": self.version,
            "task": self.task,
            "ready": self.batcher.serving and self.batcher.problem is None,
            **({"problem": self.batcher.problem} if self.batcher.problem else {}),
            "backend": self.runtime.backend,
            "execution_provider": self.runtime.provider,
            "device": self.runtime.device,
            "batching": {
                "max_batch_size": self.batching.max_batch_size,
                "max_delay_ms": self.batching.max_delay_ms,
                "max_queue_size": self.batching.max_queue_size,
                "queue_timeout_s": self.batching.queue_timeout_s,
                "queue_depth": self.batcher.queue_depth,
            },
            "metadata": self.artifact.metadata,
        }
