"""Build the images for real on a machine without systemd or container registry access (ours, CI's).

    python scripts/containers.py build api-cpu train-cpu   # the images of these compose services

tests/system/test_container.py (`make check-containers`) builds, runs and stops the images with these parts:

- `DockerEngine`: the Docker engine that answers, or Debian's `dockerd` started here; one started here is
  stopped at the end, and exactly what it added is removed again (its iptables rules, the FORWARD
  policy it changed, the bridges it made, ip_forward).
- `ensure_base_image`: pulls the CPU image's base; when no registry answers, imports a stand-in under
  the same name: Debian with python3 made by debootstrap from the machine's own apt mirror, trusting
  the host's CA bundle, cached as a tarball under ~/.cache/rnnserve so that later runs skip debootstrap.
- `host_pip_config`: the host's pip configuration (`pip config list`), for the build's pip. It reaches
  the build as a secret (never an image layer or a file in the repository); package folders it names
  on this machine are served to the build over loopback while it runs (`served_pip_config`).
- `build_service`: `docker build` of a compose service, as compose would build it, with that secret.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rnnserve"
# The CPU image's base (Dockerfile, stage base-cpu); tests/system/test_container.py checks that they agree.
CPU_BASE_IMAGE = "python:3.12-slim-bookworm"
# Where Debian keeps the CA bundle: in the stand-in (a copy of the host's) and in python:*-slim images.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# pip settings that name package sources; those on this machine's disk are served to the build.
SOURCE_KEYS = ("index-url", "extra-index-url", "find-links", "constraint")


class ContainerError(RuntimeError):
    """Something the machine lacks or refused; the message says what to do."""


def docker_environment() -> dict[str, str]:
    """Debian's docker CLI first on PATH (it has BuildKit built in; a newer CLI in /usr/local/bin may
    lack the buildx plugin BuildKit needs there), BuildKit on, and compose building through it."""
    return os.environ | {
        "PATH": f"/usr/bin:/usr/sbin:{os.environ.get('PATH', '')}",
        "DOCKER_BUILDKIT": "1",
        "COMPOSE_DOCKER_CLI_BUILD": "1",
    }


def run(*command: str, timeout: float = 600, check: bool = True, **kwargs: object) -> str:
    """Run a command with the Docker environment; its stdout, or an error holding its output."""
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=docker_environment(), **kwargs
        )  # type: ignore[call-overload]
    except FileNotFoundError as error:
        raise ContainerError(
            f"{command[0]} is missing: `make container-tools` installs what is needed"
        ) from error
    if check and result.returncode != 0:
        raise ContainerError(f"`{' '.join(command)}` failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return str(result.stdout)


def require(tool: str, package: str) -> str:
    found = shutil.which(tool, path=docker_environment()["PATH"])
    if found is None:
        raise ContainerError(f"{tool} is missing: `make container-tools` (or apt-get install {package})")
    return found


# ---- the engine ----------------------------------------------------------------------------------------


def engine_answers() -> bool:
    docker = require("docker", "docker.io")
    return subprocess.run([docker, "version"], capture_output=True, env=docker_environment()).returncode == 0


def default_route_mtu() -> int:
    """The MTU of the default route's device: containers' packets must fit it (1400 on our machines)."""
    device = run("ip", "route", "show", "default").split(" dev ", 1)[1].split()[0]
    return int(Path(f"/sys/class/net/{device}/mtu").read_text())


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


@dataclass
class DockerEngine:
    """`with DockerEngine() as engine:` a Docker engine that answers for the block's duration."""

    started: bool = False
    workdir: Path | None = None
    _process: subprocess.Popen[bytes] | None = None
    _ip_forward: str = ""
    _forward_policy: str = ""
    _links_before: set[str] = field(default_factory=set)

    def __enter__(self) -> DockerEngine:
        if engine_answers():
            return self
        dockerd = require("dockerd", "docker.io")
        if os.geteuid() != 0:
            raise ContainerError("no Docker engine answers, and starting dockerd needs root: run as root")
        self._ip_forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        self._forward_policy = re.findall(r"^-P FORWARD (\w+)", run("iptables", "-S", "FORWARD"), re.M)[0]
        self._links_before = _links()
        self.workdir = Path(tempfile.mkdtemp(prefix="rnnserve-dockerd-"))
        command = [dockerd, "--mtu", str(default_route_mtu()), "--pidfile", str(self.workdir / "dockerd.pid")]
        with (self.workdir / "dockerd.log").open("wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=log, env=docker_environment())
        self.started = True
        deadline = time.monotonic() + 60
        while not engine_answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise ContainerError(f"dockerd did not start:\n{self.log()[-3000:]}")
            time.sleep(0.5)
        return self

    def log(self) -> str:
        return (self.workdir / "dockerd.log").read_text(errors="replace") if self.workdir else ""

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None
        self._remove_what_dockerd_added()

    def _remove_what_dockerd_added(self) -> None:
        """Its iptables rules and chains (every other rule stays), the FORWARD policy it set to DROP, the
        bridges it made (docker0, compose's br-*) and ip_forward, each back as it was."""
        rules = [line for line in run("iptables-save").splitlines() if "docker" not in line.lower()]
        rules = [re.sub(r"^:FORWARD \w+", f":FORWARD {self._forward_policy}", line) for line in rules]
        run("iptables-restore", input="\n".join(rules) + "\n")
        for link in sorted(_links() - self._links_before):
            if link == "docker0" or link.startswith(("br-", "veth")):
                run("ip", "link", "delete", link, check=False)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(self._ip_forward + "\n")
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


# ---- the base image --------------------------------------------------------------------------------------


def apt_mirror(suite: str) -> str:
    """The Debian mirror this machine's apt uses for `suite` (deb822 `URIs:`, or one-line sources)."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", sources.read_text()):
            fields = dict(re.findall(r"^([\w-]+):\s*(.+)$", stanza, re.M))
            if suite in fields.get("Suites", "").split() and "URIs" in fields:
                return fields["URIs"].split()[0]
    one_line = Path("/etc/apt/sources.list")
    if one_line.exists():
        for match in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", one_line.read_text(), re.M):
            if match.group(2) == suite:
                return match.group(1)
    raise ContainerError(f"no apt source on this machine serves Debian {suite}: add one, or pull {suite}")


def standin_tarball(image: str) -> Path:
    return CACHE_DIR / f"{re.sub(r'[^A-Za-z0-9.-]', '_', image)}-standin.tar"


def make_standin_tarball(image: str) -> Path:
    """debootstrap Debian (the suite the tag names, e.g. -bookworm) with python3 and the host's CAs."""
    suite = image.rsplit("-", 1)[-1]
    debootstrap = require("debootstrap", "debootstrap")
    tarball = standin_tarball(image)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rnnserve-rootfs-") as scratch:
        rootfs = Path(scratch, "rootfs")
        packages = "--include=python3,python3-venv,ca-certificates"
        run(debootstrap, "--variant=minbase", packages, suite, str(rootfs), apt_mirror(suite), timeout=900)
        shutil.copyfile(CA_BUNDLE, rootfs / CA_BUNDLE.relative_to("/"))
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".partial")
        run("tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), ".")
        partial.rename(tarball)
    return tarball


def ensure_base_image(image: str = CPU_BASE_IMAGE) -> str:
    """Make `image` available to builds; say how: present, pulled, or a stand-in imported."""
    if (
        subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, env=docker_environment()
        ).returncode
        == 0
    ):
        return "present"
    if (
        subprocess.run(["docker", "pull", image], capture_output=True, env=docker_environment()).returncode
        == 0
    ):
        return "pulled"
    tarball = standin_tarball(image)
    how = "stand-in imported from the cache"
    if not tarball.exists():
        tarball = make_standin_tarball(image)
        how = "stand-in made with debootstrap"
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["python3"]',
        f'LABEL org.opencontainers.image.description="stand-in for {image}: Debian, python3 (debootstrap)"',
    ]
    run("docker", "import", *(f"--change={change}" for change in changes), str(tarball), image)
    return how


# ---- the host's pip configuration, for the build ---------------------------------------------------------


def host_pip_config(python: str = sys.executable) -> dict[str, str]:
    """What the host's pip uses (`pip config list`: files, then PIP_* variables), key -> value."""
    settings: dict[str, dict[str, str]] = {"global": {}, "install": {}, ":env:": {}}
    listing = run(python, "-m", "pip", "config", "list")
    for scope, key, value in re.findall(r"^([^.\n]*)\.([\w-]+)=('.*'|\".*\")$", listing, re.M):
        if scope in settings:
            settings[scope][key] = ast.literal_eval(value)
    return settings["global"] | settings["install"] | settings[":env:"]


def _local_path(entry: str, key: str) -> Path | None:
    if entry.startswith("file://"):
        return Path(urllib.parse.unquote(entry.removeprefix("file://")))
    if "://" not in entry and key in ("find-links", "constraint"):
        return Path(entry)
    return None


class _LocalSourcesHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files at their own paths, under the allowed roots only."""

    allowed: tuple[Path, ...] = ()

    def translate_path(self, path: str) -> str:
        wanted = Path(urllib.parse.unquote(path.split("?", 1)[0].split("#", 1)[0])).resolve()
        if any(wanted == root or root in wanted.parents for root in self.allowed):
            return str(wanted)
        return "/nonexistent"

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def served_pip_config(settings: dict[str, str]) -> Iterator[str]:
    """The pip.conf text for a build on the host's network: the host's settings, with every package
    source on this disk served at its own path over loopback while the block runs. A local index's
    pages link to files beside it (`<root>/simple/x/` -> `../../files/...`), so its parent is served."""
    allowed: list[Path] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _LocalSourcesHandler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    lines = ["[global]"]
    for key, value in settings.items():
        if key == "cert" and Path(value) != CA_BUNDLE:
            continue  # a bundle elsewhere is not in the image; its base trusts the host's CAs instead
        if key in SOURCE_KEYS:
            entries = []
            for entry in value.split():
                local = _local_path(entry, key)
                if local is not None:
                    local = local.resolve()
                    allowed.append(local.parent if key.endswith("index-url") else local)
                    entry = base + urllib.parse.quote(str(local)) + ("/" if local.is_dir() else "")
                entries.append(entry)
            value = " ".join(entries)
        lines.append(f"{key} = {value}")
    if allowed:  # plain HTTP on loopback: pip must be told to trust it
        trusted = [*settings.get("trusted-host", "").split(), base.removeprefix("http://")]
        lines = [line for line in lines if not line.startswith("trusted-host ")]
        lines.append(f"trusted-host = {' '.join(trusted)}")
    server.RequestHandlerClass = type("PipSources", (_LocalSourcesHandler,), {"allowed": tuple(allowed)})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield "\n".join(lines) + "\n"
    finally:
        server.shutdown()
        server.server_close()


# ---- building a compose service's image --------------------------------------------------------------------


@dataclass
class BuildSpec:
    image: str
    context: str
    target: str | None
    args: dict[str, str]


@functools.cache
def compose_services() -> dict[str, dict]:
    """Every service of docker-compose.yml, whatever its profile, as compose resolves them."""
    profiles = {
        p
        for s in yaml.safe_load(COMPOSE_FILE.read_text())["services"].values()
        for p in s.get("profiles", [])
    }
    every = [arg for profile in sorted(profiles) for arg in ("--profile", profile)]
    return dict(
        yaml.safe_load(run("docker-compose", "--file", str(COMPOSE_FILE), *every, "config"))["services"]
    )


def build_spec(service: str) -> BuildSpec:
    spec = compose_services()[service]
    build = spec["build"]
    return BuildSpec(spec["image"], build["context"], build.get("target"), dict(build.get("args", {})))


def build_service(service: str, pip_conf: str, log: Path) -> BuildSpec:
    """`docker build` of the service's image as compose would build it, with the host's pip settings;
    BuildKit's progress goes to `log`."""
    spec = build_spec(service)
    with tempfile.NamedTemporaryFile("w", prefix="pip-", suffix=".conf") as secret:
        secret.write(pip_conf)
        secret.flush()
        command = ["docker", "build", "--progress=plain", "--network=host", "--tag", spec.image]
        command += ["--secret", f"id=pip.conf,src={secret.name}"]
        command += ["--target", spec.target] if spec.target else []
        command += [f"--build-arg={key}={value}" for key, value in spec.args.items()]
        with log.open("a") as sink:
            built = subprocess.run(
                [*command, spec.context], stdout=sink, stderr=sink, env=docker_environment()
            )
    if built.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise ContainerError(f"building {service} ({spec.image}) failed; the end of {log}:\n{tail}")
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["build"])
    parser.add_argument("services", nargs="+", help="compose services, e.g. api-cpu train-cpu")
    args = parser.parse_args(argv)
    log = Path(tempfile.gettempdir(), "rnnserve-build.log")
    with DockerEngine() as engine, served_pip_config(host_pip_config()) as pip_conf:
        print(
            f"engine: {'started here' if engine.started else 'already running'}; "
            f"{CPU_BASE_IMAGE}: {ensure_base_image()}"
        )
        for service in args.services:
            started = time.monotonic()
            spec = build_service(service, pip_conf, log)
            size = int(run("docker", "image", "inspect", "--format", "{{.Size}}", spec.image))
            print(
                f"{spec.image}: built in {time.monotonic() - started:.0f} s, {size / 1e9:.2f} GB (log: {log})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
