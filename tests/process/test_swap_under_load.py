"""Versions swapped under load lose nothing: scripts/swap_under_load.py, shortened, against real servers
with one worker, two workers and the model engine. Every request gets 200 from a version that was
served; both versions of both models answer. (Its latency and memory belong in the README.)"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import swap_under_load


@pytest.mark.parametrize("mode", list(swap_under_load.MODES))
def test_swaps_under_load_fail_no_request(mode: str, tmp_path: Path) -> None:
    args = argparse.Namespace(concurrency=16, swaps=2, warmup=2.0, seconds_between=1.5)
    result = swap_under_load.run_mode(mode, args, tmp_path)
    assert result["failed"] == 0 and result["failed_swaps"] == 0, result
    assert result["swaps"] == 4
    assert result["versions"] == ["digit_lstm 1", "digit_lstm 2", "sine_gru 1", "sine_gru 2"]
    assert isinstance(result["requests"], int) and result["requests"] > 100
