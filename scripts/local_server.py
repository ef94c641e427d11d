"""Start a server command on a free 127.0.0.1 port and wait until a ready path answers 200.

Shared by the benchmark, the soak and the load test (scripts/) and by the tests that run the service in
its own process (tests/serving.py turns `ServerNotReady` into a test failure). Standard library only, so
that `make bench` and `make soak` need nothing beyond the service's own dependencies.

    port = free_port()
    url, process = start_service({"workers": "2"}, port=port, log_path=Path("service.log"))
    ...
    stop(process)
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_PATH = "/health/ready"  # the service's readiness probe


class ServerNotReady(RuntimeError):
    """The server exited, or did not answer its ready path in time.

    `reason` says which in one line, `output` is what the server wrote ("" when it was not captured),
    `returncode` its exit status (None when it was still running and had to be killed)."""

    def __init__(self, reason: str, output: str, returncode: int | None) -> None:
        self.reason, self.output, self.returncode = reason, output, returncode
        shown = f"; its output:\n{output}" if output else "; its output went to this process's stderr"
        super().__init__(reason + shown)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    """The status and text of a plain-HTTP GET, never through a proxy; status 0 when nothing answered."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        answer = connection.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return 0, ""
    finally:
        connection.close()


def wait_until_ready(
    url: str,
    process: subprocess.Popen,
    output: Callable[[], str] | None = None,
    timeout_s: float = 120.0,
    ready_path: str = READY_PATH,
) -> None:
    """Poll `url` + `ready_path` until it answers 200.

    Raises `ServerNotReady` with `output()` (what the server wrote) if the process exits first, or if it
    is not ready within `timeout_s`; in that case the process (its whole group, when it leads one) is
    killed first."""
    command = shlex.join(str(arg) for arg in process.args) if isinstance(process.args, list) else "server"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reason = f"`{command}` exited with status {process.returncode} before {url}{ready_path} answered"
            raise ServerNotReady(reason, output() if output else "", process.returncode)
        if http_get(url + ready_path, timeout=2)[0] == 200:
            return
        time.sleep(0.2)
    _kill(process)
    reason = (
        f"`{command}` did not answer 200 at {url}{ready_path} within {timeout_s:.0f} s (killed); "
        "if it is only slow to start, allow it a longer timeout"
    )
    raise ServerNotReady(reason, output() if output else "", None)


def start_server(
    argv: Sequence[str],
    port: int,
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    append_log: bool = False,
    ready_path: str = READY_PATH,
    timeout_s: float = 120.0,
    own_group: bool = False,
    cwd: Path = REPO_ROOT,
) -> tuple[str, subprocess.Popen[bytes]]:
    """Run `argv`, a server already told (by its arguments or `env`) to listen on 127.0.0.1:`port`, and
    wait until `ready_path` answers 200; its URL and process.

    Its output goes to `log_path` (appended to with `append_log`), else to this process's own stdout
    and stderr. `own_group` puts it in a process group of its own, so that
    `stop(process, process_group=True)` ends exactly its processes. A group, not a session: on Linux
    each session is scheduled as one unit (autogroup), so a server in a session of its own would get
    only half the cores while a load generator in this session is busy. Raises `ServerNotReady`."""
    url = f"http://127.0.0.1:{port}"
    command = [str(arg) for arg in argv]
    group = 0 if own_group else None  # 0: a new group, whose id is the process's
    if log_path is None:
        process = subprocess.Popen(command, cwd=cwd, env=env, process_group=group)
    else:
        with log_path.open("ab" if append_log else "wb") as log:
            process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=log, process_group=group)
    output = None if log_path is None else functools.partial(log_path.read_text, errors="replace")
    wait_until_ready(url, process, output, timeout_s, ready_path)
    return url, process


def service_environment(
    port: int, settings: Mapping[str, str] | None = None, *, inherit: bool = False
) -> dict[str, str]:
    """This process's environment for `python -m service` on 127.0.0.1:`port`, with the given settings
    (by lower-case name: {"workers": "2"} sets RNNSERVE_WORKERS). Inherited RNNSERVE_* variables are
    dropped, so that the service runs the configuration asked for, unless `inherit`."""
    environment = {k: v for k, v in os.environ.items() if inherit or not k.startswith("RNNSERVE_")}
    environment |= {"RNNSERVE_HOST": "127.0.0.1", "RNNSERVE_PORT": str(port)}
    environment |= {f"RNNSERVE_{name.upper()}": value for name, value in (settings or {}).items()}
    return environment


def start_service(
    settings: Mapping[str, str] | None = None,
    *,
    port: int = 0,
    log_path: Path | None = None,
    inherit: bool = False,
    timeout_s: float = 120.0,
    scratch: Path | None = None,
) -> tuple[str, subprocess.Popen[bytes]]:
    """`python -m service` on `port` (0: a free one) with the given settings (see `service_environment`);
    its URL and process once /health/ready answers 200. With `scratch`, its temporary files go there
    (TMPDIR), not to the system's: what a server killed by SIGKILL leaves goes with that folder.
    Raises `ServerNotReady`."""
    port = port or free_port()
    environment = service_environment(port, settings, inherit=inherit)
    if scratch is not None:
        environment["TMPDIR"] = str(scratch)
    argv = [sys.executable, "-m", "service"]
    return start_server(argv, port, env=environment, log_path=log_path, timeout_s=timeout_s)


def stop(process: subprocess.Popen, timeout_s: float = 30.0, *, process_group: bool = False) -> int:
    """SIGTERM, and wait up to `timeout_s`; then SIGKILL what is left (with `process_group`, every process
    of the group it leads, even after it has exited itself). Its exit status."""
    if process.poll() is None:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
    if process_group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    elif process.poll() is None:
        process.kill()
    return process.wait()


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL a process that has not been waited for, with its group when it leads one."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
    process.wait()
