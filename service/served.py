"""What every served model shares: its artifact, its runtime, its batcher and its self-description."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic

from service.batching import Batcher, BatchPolicy, InputT, OutputT
from service.config import BatchSettings
from service.metrics import BatcherMetrics
from service.repository import ModelArtifact, ModelLoadError
from service.runtimes import Runtime


class ServedModel(ABC, Generic[InputT, OutputT]):
    """A loaded model behind its own batcher. Subclasses turn ready inputs into a batch and back."""

    task: ClassVar[str]
    input_names: ClassVar[tuple[str, ...]]
    output_names: ClassVar[tuple[str, ...]]

    def __init__(
        self, artifact: ModelArtifact, runtime: Runtime, batching: BatchSettings, metrics: BatcherMetrics
    ) -> None:
        self.artifact = artifact
        self.runtime = runtime
        self.batching = batching
        missing = [n for n in self.input_names if n not in runtime.input_names] + [
            n for n in self.output_names if n not in runtime.output_names
        ]
        if missing:
            raise ModelLoadError(
                f"{artifact.file}: has inputs {runtime.input_names} and outputs {runtime.output_names}, "
                f"but {artifact.name} must have {', '.join(missing)}; re-export it"
            )
        policy = BatchPolicy(
            max_batch_size=batching.max_batch_size,
            max_delay_s=batching.max_delay_ms / 1000,
            max_queue_size=batching.max_queue_size,
            queue_timeout_s=batching.queue_timeout_s,
        )
        self.batcher: Batcher[InputT, OutputT] = Batcher(artifact.name, self.run_batch, policy, metrics)

    @property
    def name(self) -> str:
        return self.artifact.name

    @property
    def version(self) -> str:
        return self.artifact.version

    @abstractmethod
    def run_batch(self, inputs: list[InputT]) -> list[OutputT]:
        """One model call on a batch; blocking, run by the batcher's worker thread."""

    @abstractmethod
    def sample_input(self) -> InputT:
        """A valid input, for the warm-up."""

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
            "ready": self.batcher.serving,
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
