"""The Kubernetes manifests under deploy/ as the deploy tests read them: each variant rendered by
`kubectl kustomize`, and the workload it runs, whether a Deployment or a KServe InferenceService."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from serving import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
VARIANTS = {
    "base": (DEPLOY / "base",),
    **{f"overlays/{d.name}": (d,) for d in sorted((DEPLOY / "overlays").iterdir()) if d.is_dir()},
    "kserve": (DEPLOY / "kserve",),
    # A component no overlay includes, rendered on top of one.
    "overlays/cpu + components/podmonitor": (DEPLOY / "overlays/cpu", DEPLOY / "components/podmonitor"),
}

SCHEMAS = {
    "ScaledObject": "keda.sh_scaledobject_v1alpha1.yaml",
    "InferenceService": "serving.kserve.io_inferenceservice_v1beta1.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitor_v1.yaml",
}


def render(kubectl: str, parts: tuple[Path, ...], scratch: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a kustomization directory, or of a resource with components on top."""
    root = parts[0]
    if len(parts) > 1:
        root = scratch / "composed"
        root.mkdir(exist_ok=True)
        # kustomize takes relative paths only.
        relative = [os.path.relpath(part, root) for part in parts]
        composed = {"resources": relative[:1], "components": relative[1:]}
        (root / "kustomization.yaml").write_text(yaml.safe_dump(composed))
    done = subprocess.run([kubectl, "kustomize", str(root)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {root} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def name_of(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def predictor_extension_fields() -> set[str]:
    schema = yaml.safe_load((DEPLOY / "schemas" / SCHEMAS["InferenceService"]).read_text())
    return set(schema["properties"]["spec"]["properties"]["predictor"]["properties"])


@dataclass
class Workload:
    """The pods a variant runs, however they are declared: a Deployment or an InferenceService."""

    name: str  # the Deployment that autoscalers target
    namespace: str
    labels: dict[str, str]
    pod: dict[str, Any]  # a core/v1 PodSpec
    settings: dict[str, str]  # the RNNSERVE_ variables of its container

    @property
    def container(self) -> dict[str, Any]:
        return dict(self.pod["containers"][0])

    def port_number(self, port: int | str) -> int:
        if isinstance(port, int):
            return port
        numbers = [p["containerPort"] for p in self.container.get("ports", []) if p.get("name") == port]
        assert numbers, f"{self.name}: no container port is named {port!r}"
        return int(numbers[0])


def workload_of(docs: list[dict[str, Any]]) -> Workload:
    (workload,) = of_kind(docs, "Deployment") + of_kind(docs, "InferenceService")
    meta = workload["metadata"]
    if workload["kind"] == "Deployment":
        template = workload["spec"]["template"]
        pod, labels, name = template["spec"], template["metadata"]["labels"], meta["name"]
        maps = {m["metadata"]["name"]: m["data"] for m in of_kind(docs, "ConfigMap")}
        sources = [maps[s["configMapRef"]["name"]] for s in pod["containers"][0].get("envFrom", [])]
    else:
        predictor = workload["spec"]["predictor"]
        pod = {k: v for k, v in predictor.items() if k not in predictor_extension_fields()}
        labels, name, sources = predictor["labels"], f"{meta['name']}-predictor", []
    variables = {e["name"]: e["value"] for e in pod["containers"][0].get("env", []) if "value" in e}
    settings = {
        k: v for source in [*sources, variables] for k, v in source.items() if k.startswith("RNNSERVE_")
    }
    return Workload(name, meta["namespace"], labels, pod, settings)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert not selector.get("matchExpressions"), "only matchLabels selectors are checked here"
    return bool(selector.get("matchLabels")) and selector["matchLabels"].items() <= labels.items()


def promql_metric_names(query: str) -> set[str]:
    """The service's series a PromQL query reads."""
    return set(re.findall(r"\b(rnnserve_[a-z_]+)\b", query))
