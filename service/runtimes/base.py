"""What the service needs from a model runtime."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np


class Runtime(Protocol):
    """A loaded model that maps named float32 arrays to named float32 arrays."""

    backend: str
    """"onnx" or "torchscript"."""
    provider: str
    """What actually runs the model, e.g. "CUDAExecutionProvider" or "CPUExecutionProvider"."""
    device: str
    """"cpu", or the GPU in use, e.g. "cuda:0"."""
    threads: int
    """CPU threads one model call may use (ONNX Runtime's intra-op threads, torch's threads)."""
    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; blocking, so callers keep it off the event loop."""
        ...
