"""A real server serves the newest version of each model, or the one RNNSERVE_MODEL_VERSIONS pins."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving import start_service


def _versions(models_dir: Path, name: str) -> list[str]:
    return sorted((p.name for p in (models_dir / name).iterdir() if p.name.isdigit()), key=int)


@pytest.mark.parametrize("pinned", [None, "1"])
def test_a_real_server_answers_with_the_pinned_or_the_newest_version(
    models_dir: Path, tmp_path: Path, pinned: str | None
) -> None:
    settings = {"workers": "1", "threads": "1"}
    if pinned is not None:
        settings["model_versions"] = json.dumps({"sine_gru": pinned})
    url, process = start_service(models_dir, tmp_path / "service.log", **settings)
    try:
        series = [float(np.sin(t / 5.0)) for t in range(300)]
        body = {"series": series, "horizon": 8, "model": "sine_gru"}
        answer = httpx.post(f"{url}/forecast", json=body, timeout=30).json()
        described = {m["name"]: m["version"] for m in httpx.get(f"{url}/models", timeout=30).json()["models"]}
    finally:
        process.terminate()
        process.wait(timeout=60)
    expected = pinned or _versions(models_dir, "sine_gru")[-1]
    assert answer["model"] == "sine_gru" and answer["version"] == expected
    assert described["sine_gru"] == expected
    assert described["digit_lstm"] == _versions(models_dir, "digit_lstm")[-1]  # not pinned: the newest
