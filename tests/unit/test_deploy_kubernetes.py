"""deploy/kubernetes: every manifest valid (core kinds with kubernetes-validate --strict, the
Prometheus Operator's kinds against a schema derived from its CRDs), kustomization.yaml
complete, and the pieces agreeing with each other and with the daemon."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from exporter.config import select
from exporter.http.web_config import OPEN_PATHS

REPO = Path(__file__).resolve().parent.parent.parent
KUBE = REPO / "deploy" / "kubernetes"
# Files that are deliberately not in kustomization.yaml, and why.
ALTERNATIVES = {"podmonitor.yaml": "used instead of servicemonitor.yaml, never with it"}
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor"}
PORT = 9474
OPERATOR_SCHEMAS = KUBE / "schemas" / "monitoring.coreos.com_v1.json"


def manifests() -> dict[str, dict[str, Any]]:
    """Every resource file but kustomization.yaml, one document each."""
    return {
        p.name: yaml.safe_load(p.read_text())
        for p in sorted(KUBE.glob("*.yaml"))
        if p.name != "kustomization.yaml"
    }


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((KUBE / "kustomization.yaml").read_text()))


def one(kind: str) -> dict[str, Any]:
    (found,) = [m for m in manifests().values() if m["kind"] == kind]
    return found


def container() -> dict[str, Any]:
    (found,) = one("DaemonSet")["spec"]["template"]["spec"]["containers"]
    return dict(found)


@pytest.mark.parametrize(
    "name", [n for n, m in manifests().items() if m["kind"] not in OPERATOR_KINDS]
)
def test_core_manifest_passes_kubernetes_validate_strict(name: str) -> None:
    kubernetes_validate.validate(
        manifests()[name], kubernetes_validate.latest_version(), strict=True
    )


@pytest.mark.parametrize("name", [n for n, m in manifests().items() if m["kind"] in OPERATOR_KINDS])
def test_operator_manifest_matches_the_crd_schema(name: str) -> None:
    """kubernetes-validate has no schema for CRDs: deploy/kubernetes/schemas holds the
    operator's, derived from its CRDs (see the file's $comment), strict about unknown fields."""
    manifest = manifests()[name]
    jsonschema.validate(manifest, operator_schema(manifest["kind"]))


def test_the_crd_schema_refuses_a_misspelt_field() -> None:
    manifest = one("ServiceMonitor")
    manifest["spec"]["endpoints"][0]["honourLabels"] = True
    with pytest.raises(jsonschema.ValidationError, match="honourLabels"):
        jsonschema.validate(manifest, operator_schema("ServiceMonitor"))


def operator_schema(kind: str) -> dict[str, Any]:
    return dict(json.loads(OPERATOR_SCHEMAS.read_text())["kinds"][kind])


def test_kustomization_lists_every_manifest_but_the_alternatives() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    assert set(listed) | set(ALTERNATIVES) == set(manifests())
    assert not set(listed) & set(ALTERNATIVES)


def test_kustomize_builds_every_listed_resource() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (the listing itself is checked above)")
    done = subprocess.run(
        ["kubectl", "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    built = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(done.stdout)}
    listed = {manifests()[name]["kind"] for name in kustomization()["resources"]}
    assert {kind for kind, _ in built} == listed


def test_the_configmap_runs_the_built_in_default_programs() -> None:
    programs = one("ConfigMap")["data"]["programs"].split(",")
    assert programs == sorted(spec.name for spec in select(None, None, []))
    env = {e["name"]: e for e in container()["env"]}
    assert "--config.names=$(BCC_EXPORTER_PROGRAMS)" in container()["args"]
    ref = env["BCC_EXPORTER_PROGRAMS"]["valueFrom"]["configMapKeyRef"]
    assert ref == {"name": one("ConfigMap")["metadata"]["name"], "key": "programs"}


def test_everything_is_in_one_namespace_and_selects_the_daemonsets_pods() -> None:
    namespace = one("Namespace")["metadata"]["name"]
    assert {m["metadata"].get("namespace", namespace) for m in manifests().values()} == {namespace}
    pod_labels = one("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert one("Service")["spec"]["selector"].items() <= pod_labels.items()
    for kind in OPERATOR_KINDS:
        spec = one(kind)["spec"]
        assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
        assert spec["namespaceSelector"]["matchNames"] == [namespace]
    service_labels = one("Service")["metadata"]["labels"]
    assert one("ServiceMonitor")["spec"]["selector"]["matchLabels"].items() <= (
        service_labels.items()
    )


def test_the_metrics_port_is_named_and_probed() -> None:
    c = container()
    assert c["ports"] == [{"name": "metrics", "containerPort": PORT, "protocol": "TCP"}]
    assert f"--web.listen-address=:{PORT}" in c["args"]
    for probe in ("startupProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/-/healthy", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "metrics"}
    # Probes carry no password: the daemon answers these without basic auth.
    assert {"/-/healthy", "/-/ready"} <= OPEN_PATHS
    assert one("Service")["spec"]["clusterIP"] == "None"
    assert one("Service")["spec"]["ports"][0]["targetPort"] == "metrics"
    assert one("ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
    assert one("PodMonitor")["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


# Labels by which service discovery tells a not-ready target: a keep/drop on them would stop
# scraping exactly the pod whose failure metrics must be seen.
READINESS_LABELS = {
    "__meta_kubernetes_pod_ready",
    "__meta_kubernetes_endpoint_ready",
    "__meta_kubernetes_endpointslice_endpoint_conditions_ready",
    "__meta_kubernetes_pod_container_init",
}


def _relabelings(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for endpoint in found for r in endpoint.get("relabelings", [])]


def test_not_ready_pods_are_still_scraped() -> None:
    # The Service lists a not-ready pod as a ready endpoint: ServiceMonitor (endpoints
    # discovery) and DNS keep it.
    assert one("Service")["spec"]["publishNotReadyAddresses"] is True
    relabelings = _relabelings(one("ServiceMonitor")["spec"]["endpoints"]) + _relabelings(
        one("PodMonitor")["spec"]["podMetricsEndpoints"]
    )
    jobs = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    relabelings += [r for job in jobs["scrape_configs"] for r in job.get("relabel_configs", [])]
    for rule in relabelings:
        sources = rule.get("sourceLabels", rule.get("source_labels", []))  # operator, Prometheus
        if rule.get("action", "replace") in ("keep", "drop"):
            assert not READINESS_LABELS & set(sources), rule
    # The Prometheus job finds pods (role: pod), whatever their readiness.
    [pods] = [job for job in jobs["scrape_configs"] if job["job_name"] == "bcc-exporter"]
    assert [sd["role"] for sd in pods["kubernetes_sd_configs"]] == ["pod"]


def test_the_pod_holds_only_the_capabilities_it_needs_and_mounts_the_host_read_only() -> None:
    pod = one("DaemonSet")["spec"]["template"]["spec"]
    security = container()["securityContext"]
    assert security["capabilities"] == {
        "drop": ["ALL"],
        "add": ["BPF", "PERFMON", "SYS_RESOURCE", "SYSLOG", "SETUID", "SETGID"],
    }
    assert security["privileged"] is False
    assert pod["hostPID"] is False
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    mounts = {m["name"]: m for m in container()["volumeMounts"]}
    assert set(host.values()) == {
        "/sys/kernel/tracing",
        "/sys/kernel/debug",
        "/lib/modules",
        "/usr/src",
        "/sys/fs/cgroup",
        "/var/log/pods",
        "/var/log/containers",
    }
    for name, path in host.items():
        assert mounts[name] == {"name": name, "mountPath": path, "readOnly": True}
