"""What every task shares: a model behind its input queue, its tensor signature, and its input rules.

A task module (`service.tasks.digits`, `service.tasks.forecasts`) is the one place that knows a
task: its input rules (pure functions that return every problem found, each as a `Problem`), its
tensor signature (what the V2 protocol and the API docs show) and its inference call. The protocols
(REST routes, `service.v2`) only decode their transport into arrays, call the task, and encode the
answer; each names a problem's place its own way (`inputs[2].series` on REST, `series[2]` on V2),
with the same message.

A model is served in one of two ways. Loaded here (`load`): its runtime runs in this process, behind
its own `Batcher`. Or as a front for a model engine in another process (`remote`): this process
checks inputs and builds answers, and the engine's batcher runs the model for every front end.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self

import numpy as np

from service.batching import Batcher, InputT, OutputT
from service.config import BatchSettings
from service.errors import InvalidInput, ServiceError
from service.lifecycle.leases import Leases
from service.metrics import BatcherMetrics
from service.repository import ModelArtifact, ModelLoadError
from service.runtimes import Runtime

FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a request's input: which input (`item`, None for the request as a whole),
    which of its fields or tensors (`field`), and what to fix (`msg`)."""

    field: str
    msg: str
    item: int | None = None


Locate = Callable[[Problem], str]
"""How a protocol names a problem's place in its own terms."""


def reject(problems: Sequence[Problem], locate: Locate) -> InvalidInput:
    """One `InvalidInput` (422 on REST, 400 on V2) that lists every problem, each at its place."""
    return InvalidInput.listing([{"loc": locate(p), "msg": p.msg} for p in problems])


def check(problems: Sequence[Problem], locate: Locate) -> None:
    if problems:
        raise reject(problems, locate)


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of a task's signature; -1 marks a dimension of any size (the first is the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    accepted: tuple[str, ...] = ()
    """Datatypes taken besides `datatype`."""
    optional: bool = False
    description: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class InputQueue(Protocol):
    """Where a request's inputs wait for model calls: a local `Batcher`, or a model engine's."""

    def refusal(self, count: int = 1) -> ServiceError | None:
        """Why `count` more inputs would be refused now (nothing counted), or None if they fit."""

    def admit(self, count: int = 1) -> None:
        """Raise (and count) `Overloaded`, `ShuttingDown` or `ModelNotReady` if `count` more inputs would
        be refused now: before a request's body is read."""

    async def submit_many(self, inputs: Sequence[Any], timeout_s: float | None = None) -> list[Any]: ...


class ServedModel(ABC, Generic[InputT, OutputT]):
    """A model of one task behind its queue. Subclasses own the task's rules, signature and inference."""

    task: ClassVar[str]
    graph_inputs: ClassVar[tuple[str, ...]]
    """The inputs and outputs the exported graph must have."""
    graph_outputs: ClassVar[tuple[str, ...]]

    def __init__(self, artifact: ModelArtifact, batching: BatchSettings) -> None:
        """Reads what the subclass needs from the artifact's metadata; `load` or `remote` attach the
        queue."""
        self.artifact = artifact
        self.batching = batching
        self._runtime: Runtime | None = None
        self._batcher: Batcher[InputT, OutputT] | None = None
        self.queue: InputQueue
        self.leases = Leases()
        """The requests that use this model now (`service.lifecycle.leases`)."""

    @classmethod
    def load(
        cls, artifact: ModelArtifact, runtime: Runtime, batching: BatchSettings, metrics: BatcherMetrics
    ) -> Self:
        """The model run here, by `runtime`, behind a batcher of its own (not yet started)."""
        missing = [n for n in cls.graph_inputs if n not in runtime.input_names] + [
            n for n in cls.graph_outputs if n not in runtime.output_names
        ]
        if missing:
            raise ModelLoadError(
                f"{artifact.file}: has inputs {runtime.input_names} and outputs {runtime.output_names}, "
                f"but {artifact.name} must have {', '.join(missing)}; re-export it"
            )
        model = cls(artifact, batching)
        model._runtime = runtime
        model._batcher = Batcher(artifact.name, model.run_batch, batching, metrics, probe=model.probe)
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
    def precision(self) -> str:
        """fp32, or int8 when the version's quantized variant answers (`service.precision`)."""
        return self.artifact.precision

    def release(self) -> None:
        """Let go of the runtime (its session, its weights) at once, once the batcher has stopped; the
        model and its batcher refer to each other, and would otherwise wait for the garbage collector."""
        self._runtime = None

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

    # The task's tensors, as the V2 protocol and the docs show them.

    @property
    @abstractmethod
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    @abstractmethod
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    def declined_inputs(self) -> dict[str, str]:
        """The task's optional inputs that this model's graph does not take, each with what to do instead
        (none by default)."""
        return {}

    @abstractmethod
    def tensor_problems(self, arrays: dict[str, np.ndarray]) -> list[Problem]:
        """Every problem of a batch of tensors (named as in `inputs`, of their datatypes), each named by
        tensor and row."""

    @abstractmethod
    async def infer(
        self, arrays: dict[str, np.ndarray], locate: Locate, timeout_s: float | None
    ) -> dict[str, np.ndarray]:
        """Every output tensor, by name, for checked input tensors; batched with other requests'.
        A problem only the model's answer reveals is named by `locate`."""

    # The model call.

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
            "precision": self.precision,
            "precision_reason": self.artifact.precision_reason,
            "backend": self.runtime.backend,
            "execution_provider": self.runtime.provider,
            "device": self.runtime.device,
            "threads": self.runtime.threads,
            "batching": {
                "max_batch_size": self.batching.max_batch_size,
                "max_delay_ms": self.batching.max_delay_ms,
                "max_queue_size": self.batching.max_queue_size,
                "queue_timeout_s": self.batching.queue_timeout_s,
                "queue_depth": self.batcher.queue_depth,
            },
            "metadata": self.artifact.metadata,
        }
