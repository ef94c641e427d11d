"""TorchScript: the exported `model.pt`, on CUDA when torch sees a GPU. Importing this module imports
torch, so the service only does so when RNNSERVE_BACKEND=torchscript."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch

from service.repository import ModelArtifact, ModelLoadError


class TorchScriptRuntime:
    """A TorchScript module whose positional inputs and outputs are named by the model's metadata."""

    backend = "torchscript"
    provider = "torch.jit"

    def __init__(self, artifact: ModelArtifact, device: Literal["auto", "cpu", "cuda"], threads: int) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(
                "RNNSERVE_DEVICE=cuda, but torch sees no GPU: install a CUDA build of torch on a machine "
                "with a GPU, or set RNNSERVE_DEVICE=auto"
            )
        use_cuda = device != "cpu" and torch.cuda.is_available()
        self._device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        self.device = str(self._device)
        if threads:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        try:
            with warnings.catch_warnings():  # torch >= 2.9 calls TorchScript deprecated; it still loads
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(artifact.file), map_location=self._device).eval()
        except Exception as exc:  # torch raises RuntimeError and friends for a bad archive
            raise ModelLoadError(f"{artifact.file}: torch cannot load it as TorchScript: {exc}") from exc
        self.input_names = [str(spec["name"]) for spec in artifact.metadata.get("inputs", [])]
        self.output_names = [str(spec["name"]) for spec in artifact.metadata.get("outputs", [])]
        if not self.input_names or not self.output_names:
            raise ModelLoadError(
                f"{artifact.directory / 'metadata.json'}: lists no inputs or outputs, which the "
                "TorchScript backend needs to name the module's arguments and results"
            )

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arguments = [torch.from_numpy(inputs[name]).to(self._device) for name in self.input_names]
        with torch.inference_mode():
            results = self.module(*arguments)
        if isinstance(results, torch.Tensor):
            results = (results,)
        return {name: result.cpu().numpy() for name, result in zip(self.output_names, results, strict=True)}
