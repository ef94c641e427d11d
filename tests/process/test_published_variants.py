"""The digit variants that `python -m training.compare` published under models/, served over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
from serving import REPO_ROOT, start_service

from training.export import onnx_session

PUBLISHED = ["digit_rnn", "digit_gru"]


def test_the_service_serves_the_published_variants(
    tmp_path: Path, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    """Each variant, named in the request, answers with the digits its ONNX graph gives directly."""
    images, _ = mnist_test_set
    batch = images[:32]
    url, process = start_service(REPO_ROOT / "models", tmp_path / "service.log", models=",".join(PUBLISHED))
    try:
        for name in PUBLISHED:
            answer = httpx.post(
                f"{url}/predict/digit?model={name}",
                content=batch.tobytes(),
                headers={"content-type": "application/octet-stream"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            predictions = answer.json()["predictions"]
            session = onnx_session(REPO_ROOT / "models" / name / "1" / "model.onnx")
            expected = session.run(["probabilities"], {"pixels": batch.astype(np.float32)})[0].argmax(1)
            assert [p["model"] for p in predictions] == [name] * len(batch)
            assert [p["digit"] for p in predictions] == expected.tolist()
    finally:
        process.terminate()
        process.wait(timeout=30)
