"""Export a trained network to the model repository: `models/<name>/<version>/` with model.onnx,
model.pt (TorchScript) and a metadata.json that describes them and carries their sha256."""

from __future__ import annotations

import json
import logging
import platform
import shlex
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from service.repository import sha256_of

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
TORCHSCRIPT_FILE = "model.pt"
METADATA_FILE = "metadata.json"
OPSET = 17
PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # a str names a dynamic axis
    meaning: str
    dtype: str = "float32"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "meaning": self.meaning}


def next_version(model_root: Path) -> str:
    """One more than the highest integer version under `model_root` (1 when there is none)."""
    versions = [int(p.name) for p in model_root.glob("*") if p.is_dir() and p.name.isdigit()]
    return str(max(versions, default=0) + 1)


def library_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


def command_line(module: str, argv: Sequence[str]) -> str:
    """`python -m <module> <argv>`, quoted for a shell."""
    return " ".join(["python", "-m", module, *(shlex.quote(a) for a in argv)])


def onnx_session(path: Path, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session for the model at `path` on the CPU, set up as the service sets up its
    own, with `threads` intra-op threads (None: ONNX Runtime's choice, one per core)."""
    import onnxruntime

    from service.runtimes.onnx import session_options

    return onnxruntime.InferenceSession(
        str(path), session_options(threads), providers=["CPUExecutionProvider"]
    )


def export_model(
    module: nn.Module,
    example: Sequence[torch.Tensor],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    out_dir: Path,
) -> None:
    """Write model.onnx and model.pt for `module` (in eval mode, on the CPU) into `out_dir`.

    Every axis named by a string in a spec's shape is exported as dynamic.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    module = module.cpu().eval()
    example = tuple(t.cpu() for t in example)
    dynamic_axes = {
        spec.name: {axis: str(size) for axis, size in enumerate(spec.shape) if isinstance(size, str)}
        for spec in [*inputs, *outputs]
    }
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which does not
        # yet export nn.LSTM/nn.GRU with a dynamic time axis as one ONNX op; keep the proven one.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(out_dir / ONNX_FILE),
            dynamo=False,
            input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
        )
        scripted = torch.jit.script(module)
    scripted.save(str(out_dir / TORCHSCRIPT_FILE))


def check_parity(out_dir: Path, module: nn.Module, cases: Sequence[Sequence[torch.Tensor]]) -> float:
    """Largest difference between eager, ONNX Runtime and TorchScript outputs over `cases`.

    Raises when any exceeds PARITY_TOLERANCE (relative to the output's magnitude, at least 1).
    """
    module = module.cpu().eval()
    session = onnx_session(out_dir / ONNX_FILE)
    scripted = torch.jit.load(str(out_dir / TORCHSCRIPT_FILE), map_location="cpu")
    names = [i.name for i in session.get_inputs()]
    worst = 0.0
    with torch.no_grad():
        for case in cases:
            eager = [t.numpy() for t in module(*case)]
            onnx_out = session.run(None, {n: t.numpy() for n, t in zip(names, case, strict=True)})
            script_out = [t.numpy() for t in scripted(*case)]
            for reference, ort_value, ts_value in zip(eager, onnx_out, script_out, strict=True):
                magnitude = max(1.0, float(np.abs(reference).max()))
                for other in (ort_value, ts_value):
                    difference = float(np.abs(other - reference).max()) / magnitude
                    worst = max(worst, difference)
    if worst > PARITY_TOLERANCE:
        raise AssertionError(f"exported model differs from the eager one by {worst:.2e} > {PARITY_TOLERANCE}")
    return worst


def write_metadata(out_dir: Path, metadata: dict[str, Any], module: str, argv: Sequence[str]) -> Path:
    """Add file checksums, library versions and the creating command; write metadata.json."""
    files = {
        name: {"sha256": sha256_of(out_dir / name), "bytes": (out_dir / name).stat().st_size}
        for name in (ONNX_FILE, TORCHSCRIPT_FILE)
    }
    document = {
        **metadata,
        "onnx_file": ONNX_FILE,
        "torchscript_file": TORCHSCRIPT_FILE,
        "onnx_opset": OPSET,
        "files": files,
        "libraries": library_versions(),
        "command": command_line(module, argv),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = out_dir / METADATA_FILE
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
