"""The Python client's model repository calls (index, load, unload) against a real service on
127.0.0.1, with an admin key and without."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rnnserve_client import ApiError, AsyncClient, AuthenticationError, Client, RepositoryEntry
from serving import one_worker_service

SINE = [float(np.sin(t / 4)) for t in range(64)]


def test_the_repository_calls(tmp_path: Path) -> None:
    with one_worker_service(tmp_path / "server.log", api_keys="user", admin_keys="admin") as served:
        with Client(served, api_key="admin") as admin:
            index = admin.repository_index()
            assert RepositoryEntry("sine_gru", "2", "READY") in index
            assert all(entry.state == "READY" for entry in admin.repository_index(ready_only=True))
            change = admin.load_model("sine_gru", 1)
            assert (change.version, change.state, change.changed) == ("1", "READY", True)
            assert change.seconds is not None and change.seconds > 0
            assert admin.forecast(SINE, horizon=2, model="sine_gru").version == "1"
            assert admin.load_model("sine_gru").version == "2"
            with pytest.raises(ApiError) as missing:
                admin.load_model("sine_gru", 9)
            unloaded = admin.unload_model("digit_gru")
            assert (unloaded.name, unloaded.version, unloaded.state, unloaded.changed) == (
                "digit_gru", "", "UNAVAILABLE", True
            )  # fmt: skip
        with Client(served, api_key="user") as user, pytest.raises(AuthenticationError) as refused:
            user.unload_model("digit_gru")
    assert missing.value.status_code == 404 and "has no version '9'" in missing.value.message
    assert refused.value.status_code == 403 and refused.value.message.startswith(
        "this key is not an admin key"
    )


async def test_the_async_repository_calls(
    mnist_test_set: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    images, _ = mnist_test_set
    with one_worker_service(tmp_path / "server.log", admin_keys="admin") as served:
        async with AsyncClient(served, api_key="admin") as admin:
            assert (await admin.load_model("digit_lstm", "1")).version == "1"
            assert (await admin.predict_digit(images[0])).version == "1"
            unloaded = await admin.unload_model("digit_gru")
            assert (unloaded.state, unloaded.changed) == ("UNAVAILABLE", True)
            states = {(e.name, e.version): e for e in await admin.repository_index()}
            assert states[("digit_gru", "2")].reason == "not loaded: model digit_gru was unloaded"
