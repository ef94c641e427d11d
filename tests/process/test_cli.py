"""`python -m service` as a command: its usage, a wrong argument, and a port that something else holds."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys

import pytest
from local_server import REPO_ROOT, free_port, service_environment

from service.config import Settings


def run_service(*arguments: str, port: int, **settings: str) -> subprocess.CompletedProcess[str]:
    """`python -m service ARGUMENTS` on 127.0.0.1:`port`, to its end. It must end within a minute; if
    not, it and every process it started are killed, and the test fails."""
    command = [sys.executable, "-m", "service", *arguments]
    with subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=service_environment(port, settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"`{shlex.join(command)}` still ran after 60 s (killed); its stderr:\n{stderr}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_describes_every_setting_with_its_default_and_starts_nothing(flag: str) -> None:
    result = run_service(flag, port=free_port())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no log line: nothing was configured, bound or loaded
    assert result.stdout.startswith("usage: python -m service [-h]\n")
    shown = one_line(result.stdout)
    assert "Every setting comes from an environment variable" in shown
    for name, field in Settings.model_fields.items():
        assert f"RNNSERVE_{name.upper()}=" in shown, name
        assert one_line(field.description or "") in shown, name
    assert "RNNSERVE_PORT=8000 " in shown and "RNNSERVE_DRAIN_S=5.0 " in shown
    assert "RNNSERVE_API_KEYS_FILE=(unset) " in shown and "RNNSERVE_METRICS_REQUIRE_KEY=false " in shown
    assert "RNNSERVE_LOG_LEVEL=INFO The least severe" in shown
    assert "(case does not matter). One of: DEBUG, INFO, WARNING, ERROR." in shown


def test_an_unknown_argument_exits_2_with_one_line_that_points_to_help() -> None:
    result = run_service("--port", "9000", port=free_port())
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "unrecognized arguments: --port 9000" in result.stderr
    assert "RNNSERVE_" in result.stderr and "python -m service --help" in result.stderr


@pytest.mark.parametrize(
    "settings",
    [{"workers": "1"}, {"workers": "2", "engine": "inline"}, {"workers": "2", "engine": "process"}],
    ids=["1 process", "2 workers, models inline", "2 workers, model engine"],
)
@pytest.mark.parametrize("shareable", [False, True], ids=["plain", "SO_REUSEPORT"])
def test_a_port_in_use_is_named_with_the_settings_that_change_it(
    settings: dict[str, str], shareable: bool
) -> None:
    # Held by a socket with SO_REUSEPORT (as another service's workers hold theirs), the port is in use
    # too: the workers' own sockets use that option, but never to share a port with another service.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        if shareable:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_service(port=port, **settings)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"port {port} on 127.0.0.1 is already in use: stop what uses it or set RNNSERVE_PORT "
        "(RNNSERVE_HOST) to another"
    )
    assert "Errno" not in result.stderr and "Traceback" not in result.stderr
