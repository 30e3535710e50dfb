"""deploy/kubernetes/: rendered like kustomize does, valid against the Kubernetes schemas, restricted,
and wired together (selectors, ports, mounts, the config the pods load, the Host names they accept)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config import load_settings
from gateway.identity.origin import OriginPolicy
from tests.deploy.kustomize import Obj, find, render
from tests.support import PY, REPO

BASE = REPO / "deploy" / "kubernetes" / "base"
OVERLAY = REPO / "deploy" / "kubernetes" / "overlays" / "example"
# The oldest Kubernetes release the manifests claim (autoscaling/v2, policy/v1, seccompProfile
# fields: 1.23+) and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.27", kubernetes_validate.latest_version())
IMAGE_UID = 10001  # the Dockerfile's USER


def dockerfile_uid() -> int:
    users = [line.split()[1] for line in (REPO / "Dockerfile").read_text().splitlines() if line.startswith("USER ")]
    return int(users[-1].split(":")[0])


@pytest.fixture(scope="module", params=["base", "overlay"])
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    return render(BASE if request.param == "base" else OVERLAY)


def pod_spec(objects: list[Obj]) -> dict[str, Any]:
    spec: dict[str, Any] = find(objects, "Deployment", "triplock")["spec"]["template"]["spec"]
    return spec


def container(objects: list[Obj]) -> dict[str, Any]:
    containers = pod_spec(objects)["containers"]
    assert [c["name"] for c in containers] == ["triplock"]
    c: dict[str, Any] = containers[0]
    return c


def test_every_object_is_valid_against_the_kubernetes_schemas(objects: list[Obj]) -> None:
    kinds = []
    for obj in objects:
        kinds.append(obj["kind"])
        if obj["kind"] == "ServiceMonitor":
            continue  # a CRD: kubernetes-validate has no schema for it (checked structurally below)
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget",
            "HorizontalPodAutoscaler", "NetworkPolicy", "ServiceMonitor"} <= set(kinds)


def test_the_validator_rejects_a_broken_deployment(objects: list[Obj]) -> None:
    """The schema check is live: an unknown field and a wrong type are refused."""
    broken = json.loads(json.dumps(find(objects, "Deployment", "triplock")))
    broken["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True  # misspelled
    with pytest.raises(kubernetes_validate.ValidationError) as info:
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)
    assert "readOnlyRootFileSystem" in info.value.message
    broken = json.loads(json.dumps(find(objects, "Deployment", "triplock")))
    broken["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError) as info:
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)
    assert list(info.value.path) == ["spec", "replicas"]


def test_the_servicemonitor_has_no_schema_and_is_checked_by_structure(objects: list[Obj]) -> None:
    monitor = find(objects, "ServiceMonitor", "triplock")
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(monitor, K8S_VERSIONS[-1], strict=True)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = find(objects, "Service", "triplock")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "http", "path": "/metrics", "interval": "15s", "scheme": "http"}
    assert "http" in [p["name"] for p in service["spec"]["ports"]]


def test_the_pods_run_restricted(objects: list[Obj]) -> None:
    pod = pod_spec(objects)
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID, "fsGroup": IMAGE_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert dockerfile_uid() == IMAGE_UID
    assert pod["automountServiceAccountToken"] is False
    sc = container(objects)["securityContext"]
    assert sc == {
        "runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
    }
    namespace = find(objects, "Namespace", "triplock")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # What a read-only root needs: every path the gateway writes is a volume.
    mounts = {m["mountPath"]: m for m in container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/triplock"]["name"]]
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    resources = container(objects)["resources"]
    assert set(resources) == {"requests", "limits"}
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]


def test_probes_ports_and_selectors_fit_together(objects: list[Obj]) -> None:
    c = container(objects)
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    deployment = find(objects, "Deployment", "triplock")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2
    service = find(objects, "Service", "triplock")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    pdb = find(objects, "PodDisruptionBudget", "triplock")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    hpa = find(objects, "HorizontalPodAutoscaler", "triplock")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triplock"}
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    policy = find(objects, "NetworkPolicy", "triplock")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()


def test_the_network_policy_admits_only_the_ingress_and_prometheus_and_reaches_only_what_it_needs(
        objects: list[Obj]) -> None:
    spec = find(objects, "NetworkPolicy", "triplock")["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    sources = [(r["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
                [(p["port"], p["protocol"]) for p in r["ports"]]) for r in spec["ingress"]]
    assert sources == [("ingress-nginx", [(8080, "TCP")]), ("monitoring", [(8080, "TCP")])]
    egress = {tuple((p["port"], p["protocol"]) for p in r["ports"]): r["to"] for r in spec["egress"]}
    assert set(egress) == {((53, "UDP"), (53, "TCP")), ((6379, "TCP"),), ((8080, "TCP"), (443, "TCP")),
                           ((4317, "TCP"), (4318, "TCP"))}
    assert egress[((53, "UDP"), (53, "TCP"))][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    assert set(egress[((6379, "TCP"),)][0]) == {"ipBlock"}  # Redis is external: an address, not a pod


def test_the_overlay_sets_image_public_url_and_redis_address() -> None:
    objects = render(OVERLAY)
    c = container(objects)
    assert c["image"] == "registry.example.com/platform/triplock:0.1.0"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TRIPLOCK_SERVER__PUBLIC_URL"] == "https://mcp.example.com"
    egress = find(objects, "NetworkPolicy", "triplock")["spec"]["egress"]
    assert egress[1]["to"] == [{"ipBlock": {"cidr": "198.51.100.7/32"}}]
    ingress = find(objects, "Ingress", "triplock")
    assert ingress["metadata"]["namespace"] == "triplock"
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_mcp_session_id"
    assert ingress["spec"]["tls"] == [{"hosts": ["mcp.example.com"], "secretName": "triplock-tls"}]
    assert ingress["spec"]["rules"][0]["host"] == "mcp.example.com"


def test_secrets_hold_placeholders_only(objects: list[Obj]) -> None:
    secrets = [o for o in objects if o["kind"] == "Secret"]
    assert sorted(s["metadata"]["name"] for s in secrets) == ["triplock-api-keys", "triplock-secrets"]
    for secret in secrets:
        assert "data" not in secret  # base64 would hide a real value from review
    values = find(objects, "Secret", "triplock-secrets")["stringData"]
    assert sorted(values) == ["approver-tokens", "crm-mcp-token", "redis-url"]
    assert all("REPLACE-WITH-" in v for v in values.values())
    assert json.loads(find(objects, "Secret", "triplock-api-keys")["stringData"]["keys.json"]) == {
        "version": 1, "keys": []}


def env_of(c: dict[str, Any], pod_ip: str, secrets: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: secret refs resolved, $(VAR) expanded."""
    env: dict[str, str] = {}
    for e in c["env"]:
        if "value" in e:
            value = e["value"]
            for name, earlier in env.items():  # only variables defined earlier expand
                value = value.replace(f"$({name})", earlier)
            env[e["name"]] = value
        elif "secretKeyRef" in e["valueFrom"]:
            env[e["name"]] = secrets[e["valueFrom"]["secretKeyRef"]["key"]]
        else:
            assert e["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
            env[e["name"]] = pod_ip
    return env


def test_the_pods_config_loads_and_accepts_the_probes_host(
        objects: list[Obj], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap's config, with the pod's environment, passes the gateway's own validation; the
    Host the kubelet and Prometheus send (the pod's IP) and the Service's names are accepted."""
    c = container(objects)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    data = find(objects, "ConfigMap", "triplock-config")["data"]
    assert c["args"] == ["serve", "--config", f"{mounts['config']}/triplock.toml"]
    config = tomllib.loads(data["triplock.toml"])
    assert config["policy"]["file"] == f"{mounts['config']}/policy.yaml"
    assert config["auth"]["api_keys_file"] == f"{mounts['api-keys']}/keys.json"
    # Load it as the pod would, with the files at local paths.
    (tmp_path / "policy.yaml").write_text(data["policy.yaml"])
    config_text = data["triplock.toml"].replace(config["policy"]["file"], str(tmp_path / "policy.yaml"))
    (tmp_path / "triplock.toml").write_text(config_text)
    secrets = find(objects, "Secret", "triplock-secrets")["stringData"]
    for name, value in env_of(c, "10.1.2.3", secrets).items():
        monkeypatch.setenv(name, value)
    settings = load_settings(tmp_path / "triplock.toml")
    assert settings.auth.mode == "api_key" and settings.store.kind == "redis"
    assert settings.store.redis_url == secrets["redis-url"]
    assert [u.bearer_token() for u in settings.upstreams] == [secrets["crm-mcp-token"]]
    hosts = OriginPolicy.from_config(settings.server)
    for host in ("10.1.2.3:8080", "triplock.triplock.svc:8080", "triplock.triplock.svc.cluster.local:8080"):
        assert hosts.check({"host": host}) is None, host
    public = settings.server.public_url
    assert public is not None and hosts.check({"host": public.split("://")[1]}) is None
    assert hosts.check({"host": "10.1.2.4:8080"}) is not None  # another pod's address: refused
    # The policy passes the real checker.
    out = subprocess.run([PY, "-m", "gateway.cli", "policy", "check", str(tmp_path / "policy.yaml")],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "policy 'cluster'" in out.stdout


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) is not installed")
def test_the_renderer_matches_kubectl_kustomize() -> None:
    for directory in (BASE, OVERLAY):
        out = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        theirs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out.stdout) if o}
        ours = {(o["kind"], o["metadata"]["name"]): o for o in render(directory)}
        assert theirs == ours
