"""The repository index, as Triton's and MLServer's clients read it: every version of every model on
disk or served, with its state (READY, LOADING, UNLOADING, UNAVAILABLE) and, when not READY, why."""

from __future__ import annotations

from service.lifecycle.control import ControlFolder
from service.registry import ModelRegistry
from service.repository import ModelLoadError, model_names, version_folders


async def repository_index(
    registry: ModelRegistry, folder: ControlFolder, ready_only: bool = False
) -> list[dict[str, str]]:
    settings = registry.settings
    readiness = await registry.readiness()
    served = registry.served_versions()
    failures = folder.failures()
    index = []
    for name in sorted(set(registry.names()) | set(model_names(settings.model_dir))):
        try:
            on_disk = [p.name for p in version_folders(settings.model_dir, name)]
        except ModelLoadError:
            on_disk = []
        moving = {v: s for (n, v), s in registry.transitions.items() if n == name and v}
        versions = sorted(set(on_disk) | set(moving) | ({served[name]} if name in served else set()),
                          key=lambda v: (not v.isdigit(), int(v) if v.isdigit() else 0, v))  # fmt: skip
        if not versions:
            reason = registry.problem(name) or "the repository holds no version of it"
            index.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": reason})
        for version in versions:
            if served.get(name) == version:
                state = readiness.get(name, "ready")
                entry = {"state": "READY"} if state == "ready" else {"state": "UNAVAILABLE", "reason": state}
            elif version in moving and moving[version][0] != "UNAVAILABLE":
                entry = {"state": moving[version][0]}
            else:
                entry = {"state": "UNAVAILABLE", "reason": why_not(registry, name, version, failures, moving)}
            index.append({"name": name, "version": version, **entry})
    return [entry for entry in index if entry["state"] == "READY"] if ready_only else index


def why_not(
    registry: ModelRegistry,
    name: str,
    version: str,
    failures: dict[str, dict[str, str]],
    moving: dict[str, tuple[str, str]],
) -> str:
    """Why a version that is on disk is not served."""
    failure = failures.get(name, {}).get(version) or (moving[version][1] if version in moving else None)
    if failure:
        return failure
    served = registry.served_versions().get(name)
    if served is not None:
        return f"not loaded: version {served} is served"
    if registry.unloaded(name):
        return f"not loaded: model {name} was unloaded"
    return registry.problem(name) or f"not loaded: model {name} is not served (RNNSERVE_MODELS)"
