"""Model runtimes: ONNX Runtime (the default) and TorchScript (imports torch, only when chosen)."""

from __future__ import annotations

from typing import Literal

from service.config import Settings
from service.repository import ModelArtifact
from service.runtimes.base import Runtime

__all__ = ["Runtime", "gpu_available", "load_runtime", "on_gpu"]


def gpu_available(settings: Settings) -> bool:
    """Whether the chosen backend could run the models on a GPU (without loading a model)."""
    if settings.backend == "torchscript":
        import torch  # only for the TorchScript backend, which needs torch anyway

        return bool(torch.cuda.is_available())
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def on_gpu(settings: Settings) -> bool:
    """Whether the models run on a GPU: as the server found at start (`settings.gpu`), else asked now."""
    if settings.gpu is not None:
        return settings.gpu
    return settings.device != "cpu" and gpu_available(settings)


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
