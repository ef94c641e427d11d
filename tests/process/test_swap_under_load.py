"""Versions swapped under load lose nothing: scripts/swap_under_load.py, shortened, against real servers
with one worker, two workers and the model engine, under hey. Every request gets 200, from a version
that was served, and both versions of both models answer. (Its latency and memory belong in the README.)"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import swap_under_load

if TYPE_CHECKING:
    from conftest import RequireTool


@pytest.mark.parametrize("mode", list(swap_under_load.MODES))
def test_swaps_under_load_fail_no_request(mode: str, tmp_path: Path, require_tool: RequireTool) -> None:
    require_tool("hey", "hey")
    args = argparse.Namespace(concurrency=16, swaps=2, warmup=1.0, steady=2.0, seconds_between=1.0)
    result = swap_under_load.run_mode(mode, args, tmp_path)
    failed = ("steady_failed", "swapping_failed", "probes_failed", "failed_swaps")
    assert all(result[key] == 0 for key in failed), result
    assert result["swaps"] == 4
    assert result["versions"] == ["digit_lstm 1", "digit_lstm 2", "sine_gru 1", "sine_gru 2"]
    assert result["swapping_requests"] > 100 and result["probes"] > 10, result
