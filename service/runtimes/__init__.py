"""Model runtimes: ONNX Runtime (the default) and TorchScript (imports torch, only when chosen)."""

from __future__ import annotations

from typing import Literal

from service.repository import ModelArtifact
from service.runtimes.base import Runtime

__all__ = ["Runtime", "load_runtime"]


def load_runtime(
    artifact: ModelArtifact,
    backend: Literal["onnx", "torchscript"],
    device: Literal["auto", "cpu", "cuda"],
    threads: int,
) -> Runtime:
    """Open `artifact.file` with the chosen backend; raises `ModelLoadError` when it cannot."""
    if backend == "torchscript":
        from service.runtimes.torchscript import TorchScriptRuntime

        return TorchScriptRuntime(artifact, device, threads)
    from service.runtimes.onnx import OnnxRuntime

    return OnnxRuntime(artifact, device, threads)
