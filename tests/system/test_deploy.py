"""The Kubernetes manifests under deploy/, rendered and checked offline (no cluster runs here).

- Every variant renders with `kubectl kustomize`: the base, each overlay, deploy/kserve, and the optional
  PodMonitor component on top of an overlay.
- Core kinds pass kubernetes-validate --strict for Kubernetes 1.34 and for the newest version it bundles.
- Custom resources (KEDA's ScaledObject, KServe's InferenceService, the Prometheus Operator's PodMonitor)
  pass the JSON Schemas in deploy/schemas, taken from the projects' CRDs; the PodSpec that an
  InferenceService's predictor holds inline passes kubernetes-validate as a PodSpec.
- What the manifests assume of the service holds: every probe asks for a path the app serves, on the
  port it listens on; every RNNSERVE_ variable is a setting and the set of them is valid; preStop sleep,
  drain and shutdown fit in the grace period; the pod is hardened; selectors select the pods; one
  autoscaler owns each workload, and the metrics it scales on exist, named as the service exports them.
- The real service, started with the CPU variant's settings, answers every probe path without an API
  key and exports every series the autoscalers query.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from manifests import (
    DEPLOY,
    SCHEMAS,
    VARIANTS,
    Workload,
    name_of,
    of_kind,
    promql_metric_names,
    render,
    selects,
    workload_of,
)
from prometheus_client.parser import text_string_to_metric_families
from serving import start_service

from service.app import create_app
from service.config import Settings
from service.drain import ARRIVAL_GRACE_S
from service.server import ENGINE_STOP_MARGIN_S

if TYPE_CHECKING:
    from conftest import RequireTool

# Core kinds: a version clusters run today, and the newest kubernetes-validate has schemas for.
KUBERNETES_VERSIONS = ("1.34", kubernetes_validate.latest_version())
# KEDA's prometheus scaler parameters (keda.sh/docs/2.16/scalers/prometheus) and those it requires.
PROMETHEUS_TRIGGER_KEYS = {
    "serverAddress", "query", "queryParameters", "threshold", "activationThreshold", "namespace",
    "customHeaders", "ignoreNullValues", "unsafeSsl", "timeout", "authModes",
}  # fmt: skip
PROMETHEUS_TRIGGER_REQUIRED = {"serverAddress", "query", "threshold"}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
ADAPTER_RULES = yaml.safe_load((DEPLOY / "prometheus-adapter/values.yaml").read_text())["rules"]["custom"]


KUBECTL_FIX = (
    "install kubectl 1.27 or newer, which embeds kustomize v5 (the Kubernetes project's release binary; "
    "Debian's kubernetes-client is too old)"
)


@pytest.fixture(scope="module")
def kubectl(require_tool: RequireTool) -> str:
    """kubectl with a kustomize that knows components (v5); the test fails on one line without one."""
    found = require_tool("kubectl", None, fix=KUBECTL_FIX)
    asked = [found, "version", "--client", "-o", "json"]
    version = subprocess.run(asked, capture_output=True, text=True, check=False)
    try:
        kustomize = json.loads(version.stdout or "{}").get("kustomizeVersion", "")
    except json.JSONDecodeError:
        kustomize = ""
    if not kustomize.startswith("v5"):
        pytest.fail(
            f"{found} embeds kustomize {kustomize or 'of unknown version'}, not v5: {KUBECTL_FIX}",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="module")
def rendered(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    return {
        name: render(kubectl, parts, tmp_path_factory.mktemp("kustomize")) for name, parts in VARIANTS.items()
    }


@pytest.fixture
def settings_of(service_settings: Callable[..., Settings], tmp_path: Path) -> Callable[[Workload], Settings]:
    """The service's Settings from a workload's variables, with the API key file made readable here."""
    keys = tmp_path / "api-keys"
    keys.write_text("a-key\n")

    def parse(workload: Workload) -> Settings:
        fields = {k.removeprefix("RNNSERVE_").lower(): v for k, v in workload.settings.items()}
        return service_settings(**(fields | {"api_keys_file": keys}))

    return parse


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_kinds_pass_kubernetes_validate_strict(
    rendered: dict[str, list[dict[str, Any]]], variant: str, version: str
) -> None:
    problems = []
    for doc in rendered[variant]:
        if doc["kind"] in SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problems.append(f"{name_of(doc)}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{name_of(doc)}: {e.message}; if it is a custom resource, add its schema")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("variant", VARIANTS)
def test_custom_resources_match_their_crd_schemas(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    problems = []
    for doc in (d for d in rendered[variant] if d["kind"] in SCHEMAS):
        schema = yaml.safe_load((DEPLOY / "schemas" / SCHEMAS[doc["kind"]]).read_text())
        for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
            problems.append(f"{name_of(doc)}: {'.'.join(map(str, error.path))}: {error.message}")
        if doc["kind"] == "InferenceService":
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}}
            pod["spec"] = workload_of(rendered[variant]).pod
            for version in KUBERNETES_VERSIONS:
                try:
                    kubernetes_validate.validate(pod, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    problems.append(f"{name_of(doc)}: predictor as a PodSpec: {list(e.path)}: {e.message}")
        for trigger in doc["spec"].get("triggers", []):
            keys = set(trigger["metadata"])
            if (
                trigger["type"] == "prometheus"
                and not PROMETHEUS_TRIGGER_REQUIRED <= keys <= PROMETHEUS_TRIGGER_KEYS
            ):
                problems.append(f"{name_of(doc)}: prometheus trigger metadata {sorted(keys)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_ask_for_served_paths_on_the_service_port(
    rendered: dict[str, list[dict[str, Any]]], variant: str, settings_of: Callable[[Workload], Settings]
) -> None:
    workload = workload_of(rendered[variant])
    settings = settings_of(workload)
    # The app's own contract: the GET operations of its OpenAPI schema (the real-server test below GETs
    # every probe path too).
    served = {
        path for path, operations in create_app(settings).openapi()["paths"].items() if "get" in operations
    }
    for kind in PROBES:
        probe = workload.container[kind]["httpGet"]
        assert probe["path"] in served, (
            f"{variant}: {kind} asks for {probe['path']}, which the app does not serve"
        )
        assert workload.port_number(probe["port"]) == settings.port, (
            f"{variant}: {kind} is not on RNNSERVE_PORT"
        )


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variable_is_a_setting_and_the_grace_period_covers_the_shutdown(
    rendered: dict[str, list[dict[str, Any]]], variant: str, settings_of: Callable[[Workload], Settings]
) -> None:
    workload = workload_of(rendered[variant])
    known = {f"RNNSERVE_{name.upper()}" for name in Settings.model_fields}
    unknown = sorted(k for k in workload.settings if k.split("__")[0] not in known)
    assert not unknown, f"{variant}: not settings of service.config.Settings: {unknown}"
    settings = settings_of(workload)  # fails on a value the service would refuse at start-up
    engine = settings.engine_mode(gpu_available=settings.device != "cpu") == "process"
    budget = {
        "preStop sleep": workload.container["lifecycle"]["preStop"]["sleep"]["seconds"],
        "RNNSERVE_DRAIN_S": settings.drain_s,
        "arrival grace": ARRIVAL_GRACE_S,
        "RNNSERVE_SHUTDOWN_TIMEOUT_S": settings.shutdown_timeout_s,
        "model engine stop": settings.shutdown_timeout_s + ENGINE_STOP_MARGIN_S if engine else 0,
    }
    grace = workload.pod["terminationGracePeriodSeconds"]
    print(f"{variant}: {' + '.join(f'{k} {v:g}' for k, v in budget.items())} = {sum(budget.values()):g} s "
          f"< terminationGracePeriodSeconds {grace} s")  # fmt: skip
    assert sum(budget.values()) < grace, f"{variant}: the shutdown can outlast the grace period: {budget}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_pod_is_hardened_and_sized(
    rendered: dict[str, list[dict[str, Any]]], variant: str, settings_of: Callable[[Workload], Settings]
) -> None:
    workload = workload_of(rendered[variant])
    pod, container = workload.pod, workload.container
    assert pod["securityContext"] == pod["securityContext"] | {
        "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}
    }  # fmt: skip
    assert container["securityContext"] == container["securityContext"] | {
        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}
    }  # fmt: skip
    # Kubernetes' service links would put RNNSERVE_PORT=tcp://... into the environment (README in deploy/).
    assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}
    assert "emptyDir" in mounts["/tmp"], f"{variant}: /tmp is not a scratch volume on a read-only root"
    key_file = Path(workload.settings["RNNSERVE_API_KEYS_FILE"])
    secret = mounts[str(key_file.parent)]["secret"]
    assert secret["optional"] is False and key_file.name in [item["path"] for item in secret["items"]]
    resources = container["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= resources[bound].keys(), f"{variant}: no CPU or memory {bound}"
    if settings_of(workload).device == "cuda":
        assert resources["limits"]["nvidia.com/gpu"] == 1 and pod["nodeSelector"]
        assert "nvidia.com/gpu" in [toleration["key"] for toleration in pod["tolerations"]]
    else:
        assert "nvidia.com/gpu" not in resources["limits"]
    spread = [c for c in pod["topologySpreadConstraints"] if c["topologyKey"] == "kubernetes.io/hostname"]
    assert spread and selects(spread[0]["labelSelector"], workload.labels)


@pytest.mark.parametrize("variant", VARIANTS)
def test_selectors_select_the_pods(rendered: dict[str, list[dict[str, Any]]], variant: str) -> None:
    docs = rendered[variant]
    workload = workload_of(docs)
    port = workload.port_number(workload.container["ports"][0]["name"])
    for service in of_kind(docs, "Service"):
        assert service["spec"]["selector"].items() <= workload.labels.items()
        assert all(workload.port_number(p["targetPort"]) == port for p in service["spec"]["ports"])
    for budget in of_kind(docs, "PodDisruptionBudget"):
        assert selects(budget["spec"]["selector"], workload.labels)
    for policy in of_kind(docs, "NetworkPolicy"):
        assert selects(policy["spec"]["podSelector"], workload.labels)
        allowed = [
            workload.port_number(p["port"]) for rule in policy["spec"]["ingress"] for p in rule["ports"]
        ]
        assert port in allowed
    for monitor in of_kind(docs, "PodMonitor"):
        assert selects(monitor["spec"]["selector"], workload.labels)
        assert "app.kubernetes.io/name" in monitor["spec"]["podTargetLabels"]  # the queries select by it
        assert all(workload.port_number(e["port"]) == port for e in monitor["spec"]["podMetricsEndpoints"])
    for isvc in of_kind(docs, "InferenceService"):
        annotations = isvc["metadata"]["annotations"]
        assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
        (container,) = workload.pod["containers"]
        # KServe takes the protocol of a custom container from PROTOCOL and forwards its Service to the
        # first container port.
        assert {"name": "PROTOCOL", "value": "v2"} in container["env"]
        assert container["name"] == "kserve-container" and port == int(workload.settings["RNNSERVE_PORT"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_autoscaler_owns_the_workload_on_the_service_metrics(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    workload = workload_of(docs)
    autoscalers = of_kind(docs, "HorizontalPodAutoscaler") + of_kind(docs, "ScaledObject")
    assert len(autoscalers) == (0 if variant == "base" else 1), (
        f"{variant}: {list(map(name_of, autoscalers))}"
    )
    for isvc in of_kind(docs, "InferenceService"):  # KServe makes its own HPA unless told an outsider scales
        assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
    adapter_metrics = {rule["name"]["as"] for rule in ADAPTER_RULES}
    for deployment in of_kind(docs, "Deployment"):
        owned = "replicas" not in deployment["spec"]
        assert owned == bool(autoscalers), f"{variant}: the replica count belongs to the autoscaler, if any"
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload.name}
        names = {metric["pods"]["metric"]["name"] for metric in hpa["spec"]["metrics"]}
        assert names <= adapter_metrics, f"prometheus-adapter serves no {names - adapter_metrics}"
    for scaled in of_kind(docs, "ScaledObject"):
        assert scaled["spec"]["scaleTargetRef"]["name"] == workload.name
        for trigger in scaled["spec"]["triggers"]:
            query = trigger["metadata"]["query"]
            assert f'namespace="{workload.namespace}"' in query, f"{variant}: {query} looks elsewhere"
            assert f'app_kubernetes_io_name="{workload.labels["app.kubernetes.io/name"]}"' in query


@pytest.fixture(scope="module")
def cpu_service(
    rendered: dict[str, list[dict[str, Any]]], models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The service as the CPU variant configures it (on 127.0.0.1, a free port, no drain, a key file of
    this test's); its URL and API key."""
    scratch = tmp_path_factory.mktemp("deploy")
    (scratch / "api-keys").write_text("deploy-test-key\n")
    settings = {
        k.removeprefix("RNNSERVE_").lower(): v
        for k, v in workload_of(rendered["overlays/cpu"]).settings.items()
        if k not in {"RNNSERVE_HOST", "RNNSERVE_PORT"}
    }
    settings |= {"host": "127.0.0.1", "drain_s": "0", "api_keys_file": str(scratch / "api-keys")}
    url, process = start_service(models_dir, scratch / "service.log", **settings)
    yield url, "deploy-test-key"
    process.terminate()
    process.wait(timeout=60)


@pytest.mark.slow
def test_the_real_service_answers_the_probes_and_exports_the_autoscaling_series(
    rendered: dict[str, list[dict[str, Any]]], cpu_service: tuple[str, str]
) -> None:
    url, key = cpu_service
    workloads = [workload_of(docs) for docs in rendered.values()]
    probed = {w.container[kind]["httpGet"]["path"] for w in workloads for kind in PROBES}
    queries = [rule["metricsQuery"] for rule in ADAPTER_RULES] + [
        trigger["metadata"]["query"]
        for docs in rendered.values()
        for scaled in of_kind(docs, "ScaledObject")
        for trigger in scaled["spec"]["triggers"]
    ]
    series = {name for rule in ADAPTER_RULES for name in promql_metric_names(rule["seriesQuery"])}
    series |= {name for query in queries for name in promql_metric_names(query)}
    forecast = {"series": list(range(16)), "horizon": 2}
    with httpx.Client(base_url=url, timeout=30) as http:
        for path in sorted(probed):  # the kubelet sends no API key
            assert http.get(path).status_code == 200, path
        assert http.post("/forecast", json=forecast).status_code == 401, (
            "the mounted key file is not in force"
        )
        assert http.post("/forecast", json=forecast, headers={"X-API-Key": key}).status_code == 200
        exported = http.get("/metrics")
    assert exported.status_code == 200, "Prometheus scrapes /metrics without a key"
    samples = [s for family in text_string_to_metric_families(exported.text) for s in family.samples]
    missing = series - {sample.name for sample in samples}
    assert not missing, f"the autoscalers query series the service does not export: {sorted(missing)}"
    # The in-flight queries leave health checks and scrapes out by their route label; predictions count.
    routes = {s.labels["route"] for s in samples if s.name == "rnnserve_http_request_duration_seconds_sum"}
    assert {"/forecast", *probed} <= routes, routes
    for left_out in {m for query in queries for m in re.findall(r'route!~"([^"]+)"', query)}:
        assert not re.fullmatch(left_out, "/forecast"), f'route!~"{left_out}" leaves out the predictions'
        kept = sorted(route for route in {"/metrics", *probed} if not re.fullmatch(left_out, route))
        assert not kept, f'route!~"{left_out}" counts {kept} as requests in flight'
