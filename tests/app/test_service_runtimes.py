"""The runtimes on the committed models: provider choice, ONNX Runtime and TorchScript agreeing, and
a service that never imports torch unless the TorchScript backend is chosen."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from service.repository import ModelLoadError, locate
from service.runtimes import load_runtime
from service.runtimes.onnx import CPU, CUDA, choose_providers
from service.series import pad_left, recent_window

if TYPE_CHECKING:
    from conftest import ServeApp


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("auto", [CUDA, CPU], [CUDA, CPU]),
        ("auto", ["AzureExecutionProvider", CPU], [CPU]),
        ("cuda", [CUDA, CPU], [CUDA, CPU]),
        ("cpu", [CUDA, CPU], [CPU]),
    ],
)
def test_onnx_runtime_asks_for_cuda_when_it_can(
    device: str, available: list[str], expected: list[str]
) -> None:
    assert choose_providers(device, available) == expected  # type: ignore[arg-type]


def test_device_cuda_without_a_cuda_provider_is_refused_with_the_fix() -> None:
    with pytest.raises(ModelLoadError, match="install onnxruntime-gpu"):
        choose_providers("cuda", [CPU])


def test_onnx_runtime_reports_what_actually_runs(models_dir: Path) -> None:
    runtime = load_runtime(locate(models_dir, "digit_lstm", "onnx"), "onnx", "auto", threads=1)
    assert runtime.provider == CPU  # the test machines have no GPU
    assert runtime.device == "cpu"
    assert runtime.input_names == ["pixels"]
    assert runtime.output_names == ["logits", "probabilities"]


def test_both_backends_agree_on_digits(
    models_dir: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    onnx = load_runtime(locate(models_dir, "digit_lstm", "onnx"), "onnx", "cpu", threads=1)
    torchscript = load_runtime(
        locate(models_dir, "digit_lstm", "torchscript"), "torchscript", "cpu", threads=1
    )
    assert (torchscript.backend, torchscript.device) == ("torchscript", "cpu")
    images, _ = mnist_test_set
    rng = np.random.default_rng(0)
    for pixels in (images[:32].astype(np.float32), rng.uniform(0, 255, (5, 28, 28)).astype(np.float32)):
        expected, actual = onnx.run({"pixels": pixels}), torchscript.run({"pixels": pixels})
        for name in ("logits", "probabilities"):
            np.testing.assert_allclose(actual[name], expected[name], atol=1e-5, rtol=1e-5)


def test_both_backends_agree_on_forecasts(models_dir: Path) -> None:
    onnx = load_runtime(locate(models_dir, "sine_gru", "onnx"), "onnx", "cpu", threads=1)
    torchscript = load_runtime(locate(models_dir, "sine_gru", "torchscript"), "torchscript", "cpu", threads=1)
    rng = np.random.default_rng(1)
    series = [np.cumsum(rng.normal(size=n)).astype(np.float32) for n in (16, 40, 256, 1000)]
    values, mask = pad_left([recent_window(s, 256) for s in series], 8)
    expected, actual = (
        onnx.run({"series": values, "mask": mask}),
        torchscript.run({"series": values, "mask": mask}),
    )
    for name in ("mean", "std"):
        scale = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-5 * scale, rtol=1e-5)


async def test_the_torchscript_backend_serves_the_same_answers(
    serve: ServeApp, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = mnist_test_set
    series = list(np.sin(np.arange(300) / 7.0))
    answers = {}
    for backend in ("onnx", "torchscript"):
        async with serve(backend=backend) as (_, client):
            described = (await client.get("/models")).json()["models"]
            assert {(m["backend"], m["device"]) for m in described} == {(backend, "cpu")}
            digit = await client.post("/predict/digit", json={"pixels": images[5].tolist()})
            forecast = await client.post("/forecast", json={"series": series, "horizon": 20})
            answers[backend] = digit.json(), forecast.json()
    (onnx_digit, onnx_forecast), (ts_digit, ts_forecast) = answers["onnx"], answers["torchscript"]
    assert ts_digit["digit"] == onnx_digit["digit"]
    np.testing.assert_allclose(ts_digit["probabilities"], onnx_digit["probabilities"], atol=1e-5)
    np.testing.assert_allclose(ts_forecast["forecast"], onnx_forecast["forecast"], atol=1e-5)


def test_the_onnx_service_never_imports_torch(models_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from asgi_lifespan import LifespanManager
        import httpx
        from service.app import create_app
        from service.config import Settings

        async def main():
            app = create_app(Settings(model_dir={str(models_dir)!r}))
            async with LifespanManager(app, startup_timeout=120) as manager:
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
                    ready = await client.get("/health/ready")
                    assert ready.status_code == 200, ready.text
                    digit = await client.post("/predict/digit", json={{"pixels": [0, 255] * 392}})
                    assert digit.status_code == 200, digit.text
            assert "torch" not in sys.modules, "the ONNX service imported torch"

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
