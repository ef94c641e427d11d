"""`require_tool` (tests/conftest.py), which the system tier finds its programs through: a missing one
fails the test on one line that names it and how to get it, never with a traceback, never as a skip."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import RequireTool

MISSING = "rnnserve-no-such-program"


def failure(require_tool: RequireTool, command: str, package: str | None, fix: str | None = None) -> str:
    """The one line a test fails on when `command` is missing; it must not come with a traceback."""
    with pytest.raises(pytest.fail.Exception) as raised:
        require_tool(command, package, fix=fix)
    assert raised.value.pytrace is False, "the failure shows the fixture's traceback"
    return str(raised.value)


def test_without_root_a_missing_program_fails_on_one_line_naming_its_debian_package(
    require_tool: RequireTool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    failed = failure(require_tool, MISSING, "rnnserve-tools")
    assert failed.startswith(f"{MISSING} is missing: sudo apt-get install rnnserve-tools ")
    assert "\n" not in failed


def test_a_program_without_a_debian_package_is_never_installed_the_fix_says_how_to_get_it(
    require_tool: RequireTool,
) -> None:
    # As root too: no apt-get runs, so the failure carries the fix alone.
    failed = failure(require_tool, MISSING, None, fix="download it from its project's releases")
    assert failed == f"{MISSING} is missing: download it from its project's releases"


def test_a_program_needs_a_debian_package_or_a_fix(require_tool: RequireTool) -> None:
    with pytest.raises(TypeError, match="fix="):
        require_tool(MISSING, None)


def test_programs_pip_installs_beside_the_interpreter_are_found_off_path(
    require_tool: RequireTool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """hadolint comes with the dev extra, into the virtualenv's bin folder, which PATH may not hold."""
    monkeypatch.setenv("PATH", str(tmp_path))
    interpreter = Path(sys.executable)
    assert require_tool(interpreter.name, None, fix="recreate the virtualenv") == str(interpreter)
