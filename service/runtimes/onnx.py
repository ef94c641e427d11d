"""ONNX Runtime: the CUDA execution provider when a GPU can be used, else the CPU."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

import numpy as np
import onnxruntime as ort

from service.config import resolved_threads
from service.repository import ModelArtifact, ModelLoadError

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def choose_providers(device: Literal["auto", "cpu", "cuda"], available: list[str]) -> list[str]:
    """The execution providers to ask for, in order of preference."""
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise ModelLoadError(
            f"RNNSERVE_DEVICE=cuda, but this onnxruntime offers only {', '.join(available)}: install "
            "onnxruntime-gpu (the `gpu` extra) on a machine with a GPU, or set RNNSERVE_DEVICE=auto"
        )
    return [CPU]


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Session options with `threads` intra-op threads (0 or None: one per core) and one inter-op
    thread, errors-only logging, and idle intra-op threads that sleep instead of spinning: spinning
    threads take the CPU that the HTTP side of the service (or torch, or a load generator) needs
    between model calls."""
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntime:
    """One ONNX Runtime session on `artifact.file`."""

    backend = "onnx"

    def __init__(self, artifact: ModelArtifact, device: Literal["auto", "cpu", "cuda"], threads: int) -> None:
        providers = choose_providers(device, ort.get_available_providers())
        options = session_options(threads)  # errors only: a CUDA fallback is reported below
        try:
            self.session = ort.InferenceSession(str(artifact.file), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types, all Exceptions
            raise ModelLoadError(f"{artifact.file}: ONNX Runtime cannot load it: {exc}") from exc
        self.provider = self.session.get_providers()[0]
        self.threads = resolved_threads(threads)
        if CUDA in providers and self.provider != CUDA:
            message = (
                f"{artifact.file}: the CUDA execution provider could not start (check the CUDA and cuDNN "
                "libraries onnxruntime-gpu needs), so ONNX Runtime runs on the CPU"
            )
            if device == "cuda":
                raise ModelLoadError(message + "; RNNSERVE_DEVICE=cuda forbids that")
            logger.warning(message)
        if self.provider == CUDA:
            device_id = self.session.get_provider_options().get(CUDA, {}).get("device_id", "0")
            self.device = f"cuda:{device_id}"
        else:
            self.device = "cpu"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, dict(inputs))
        return dict(zip(self.output_names, outputs, strict=True))
