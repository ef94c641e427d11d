"""A one-minute soak of the real service (scripts/soak.py at 70 % of its measured capacity): no error,
memory growth under 5 %, no descriptor leak. The README records a 15-minute run of the same script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_a_minute_at_seventy_percent_of_capacity_without_errors_or_leaks(tmp_path: Path) -> None:
    report = tmp_path / "soak.md"
    done = subprocess.run(
        [sys.executable, "scripts/soak.py", "--seconds", "60", "--interval", "10", "--out", str(report),
         "--port", "0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    table = [
        line for line in report.read_text().splitlines() if line.startswith("| ") and "second" not in line
    ]
    assert len(table) >= 5, report.read_text()
