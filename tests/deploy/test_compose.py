"""compose.yaml, deploy/compose/ and the Dockerfile: every file they name exists, the replicas run
restricted, only loopback is published, and the pieces agree with each other and with the
gateway's own validation (config, Host names, policy path, ports)."""

from __future__ import annotations

import re
import shutil
import subprocess
from fnmatch import fnmatchcase as fnmatch
from typing import Any

import pytest
import yaml

from gateway.config import load_settings
from gateway.identity.origin import OriginPolicy
from tests.support import REPO

COMPOSE = REPO / "compose.yaml"
CONFIG_DIR = REPO / "deploy" / "compose"
REPLICAS = ("triplock-1", "triplock-2")
CONFIG_TARGET = "/etc/triplock/triplock.toml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def instructions(dockerfile: list[str], name: str) -> list[str]:
    return [line[len(name) + 1:] for line in dockerfile if line.split()[0] == name]


def volumes_of(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of a service's short-syntax volumes."""
    out = {}
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        out[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "rw")
    return out


def test_every_service_has_an_image_and_every_mounted_file_exists(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*REPLICAS, "demo-1", "demo-2", "keys", "lb", "redis", "otel-collector", "prometheus",
                             "grafana"}
    declared = set(compose["volumes"])
    used = set()
    for name, service in services.items():
        assert "image" in service, name
        for target, (source, _mode) in volumes_of(service).items():
            if source.startswith("."):
                assert (REPO / source).is_file(), f"{name}: {source} (mounted at {target}) is not in the repository"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared
    for replica in REPLICAS:
        assert services[replica]["build"] == "." and services[replica]["image"] == "triplock:local"
    for name in ("demo-1", "demo-2", "keys"):
        assert services[name]["image"] == "triplock:local"  # the image the replicas build


def test_only_loopback_is_published(compose: dict[str, Any]) -> None:
    published = {name: s["ports"] for name, s in compose["services"].items() if "ports" in s}
    assert published == {"lb": ["127.0.0.1:8080:8080"], "prometheus": ["127.0.0.1:9090:9090"],
                         "grafana": ["127.0.0.1:3000:3000"]}


def test_the_triplock_containers_run_restricted(compose: dict[str, Any], dockerfile: list[str]) -> None:
    [user] = instructions(dockerfile, "USER")
    assert user == "10001:10001"
    for name in (*REPLICAS, "demo-1", "demo-2", "keys"):
        service = compose["services"][name]
        assert service["user"] == user, name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert service["security_opt"] == ["no-new-privileges:true"], name
    for name in (*REPLICAS, "demo-1", "demo-2"):
        assert compose["services"][name]["tmpfs"] == ["/tmp:size=16m,mode=1777"], name


def test_the_replicas_mount_config_keys_and_state(compose: dict[str, Any], dockerfile: list[str]) -> None:
    [cmd] = instructions(dockerfile, "CMD")
    assert cmd == f'["serve", "--config", "{CONFIG_TARGET}"]'
    states = set()
    for name in REPLICAS:
        service = compose["services"][name]
        mounts = volumes_of(service)
        assert mounts[CONFIG_TARGET] == ("./deploy/compose/triplock.toml", "ro")
        assert mounts["/etc/triplock/keys"] == ("keys", "ro")  # only the keys tool writes the key file
        states.add(mounts["/var/lib/triplock"][0])
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
        env = service["environment"]
        # Required from the operator's environment: Compose refuses to start without it.
        assert env["TRIPLOCK_APPROVER_TOKENS"].startswith("${TRIPLOCK_APPROVER_TOKENS:?")
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert len(states) == len(REPLICAS)  # one audit chain per replica
    assert volumes_of(compose["services"]["keys"])["/etc/triplock/keys"] == ("keys", "rw")


def test_the_compose_config_loads_and_accepts_every_host_that_calls_it(
        compose: dict[str, Any], dockerfile: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPLOCK_APPROVER_TOKENS", "ops=" + "a" * 48)
    settings = load_settings(CONFIG_DIR / "triplock.toml")
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 8080)
    assert settings.auth.mode == "api_key" and settings.store.kind == "redis"
    assert settings.store.redis_url == "redis://redis:6379/0" and "redis" in compose["services"]
    # The policy file is the one the image ships.
    [copy] = [c for c in instructions(dockerfile, "COPY") if "quickstart_policy.yaml" in c]
    assert copy.split()[-1] == str(settings.policy.file)
    assert (REPO / copy.split()[0]).is_file()
    assert str(settings.auth.api_keys_file).startswith("/etc/triplock/keys/")
    hosts = OriginPolicy.from_config(settings.server)
    callers = {"the image's HEALTHCHECK": healthcheck_host(dockerfile),
               "HAProxy's health check": haproxy_check_host(),
               "the balancer's public name": "localhost:8080"}
    for target in prometheus_targets():
        callers[f"Prometheus scraping {target}"] = target
    for who, host in callers.items():
        assert hosts.check({"host": host}) is None, f"{who} sends Host {host}, which the gateway refuses"
    assert hosts.check({"host": "evil.example:8080"}) is not None


def healthcheck_host(dockerfile: list[str]) -> str:
    [check] = instructions(dockerfile, "HEALTHCHECK")
    url = re.search(r"'(http://[^']+/healthz)'", check)
    assert url is not None
    return url.group(1).split("/")[2]


def haproxy_check_host() -> str:
    match = re.search(r"^\s*http-check send .* hdr Host (\S+)$", (CONFIG_DIR / "haproxy.cfg").read_text(), re.M)
    assert match is not None
    return match.group(1)


def prometheus_targets() -> list[str]:
    config = yaml.safe_load((CONFIG_DIR / "prometheus.yml").read_text())
    return [t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]


def test_the_balancer_is_sticky_on_the_session_and_fronts_every_replica() -> None:
    cfg = (CONFIG_DIR / "haproxy.cfg").read_text()
    assert re.findall(r"^\s*server (\S+) (\S+)", cfg, re.M) == [(r, f"{r}:8080") for r in REPLICAS]
    assert re.search(r"^\s*stick on req\.hdr\(mcp-session-id\)$", cfg, re.M)
    assert re.search(r"^\s*stick store-response res\.hdr\(mcp-session-id\)$", cfg, re.M)
    assert re.search(r"^\s*http-check send meth GET uri /readyz ", cfg, re.M)
    assert re.search(r"^\s*bind :8080$", cfg, re.M)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_balancer_config() -> None:
    out = subprocess.run(["haproxy", "-c", "-f", str(CONFIG_DIR / "haproxy.cfg")], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Configuration file is valid" in out.stdout + out.stderr


def test_each_demo_upstream_shares_its_replicas_loopback(
        compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPLOCK_APPROVER_TOKENS", "ops=" + "a" * 48)
    [upstream] = load_settings(CONFIG_DIR / "triplock.toml").upstreams
    assert (upstream.name, upstream.transport) == ("demo", "http")
    for i, replica in enumerate(REPLICAS, 1):
        demo = compose["services"][f"demo-{i}"]
        assert demo["network_mode"] == f"service:{replica}"
        args = demo["command"]
        assert args[:3] == ["demo-upstream", "--transport", "http"]
        host, port = args[args.index("--host") + 1], args[args.index("--port") + 1]
        assert upstream.url == f"http://{host}:{port}/mcp" and host == "127.0.0.1"


def test_monitoring_reuses_the_shipped_dashboard_rules_and_collector(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prom = volumes_of(services["prometheus"])
    assert prom["/etc/prometheus/triplock-alerts.yml"] == ("./deploy/triplock-alerts.yml", "ro")
    config = yaml.safe_load((CONFIG_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["triplock-alerts.yml"]
    assert sorted(prometheus_targets()) == [f"{r}:8080" for r in REPLICAS]
    grafana = volumes_of(services["grafana"])
    assert grafana["/var/lib/grafana/dashboards/triplock.json"] == ("./deploy/grafana-dashboard.json", "ro")
    provider = yaml.safe_load((CONFIG_DIR / "grafana" / "dashboards.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    [source] = yaml.safe_load((CONFIG_DIR / "grafana" / "datasources.yaml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    # The collector runs the shipped config with the Compose overlay merged over it.
    otel = services["otel-collector"]
    files = [arg.split("=", 1)[1] for arg in otel["command"]]
    mounts = volumes_of(otel)
    assert [mounts[f][0] for f in files] == ["./deploy/otel-collector.yaml", "./deploy/compose/otel-collector.yaml"]
    merged = deep_merge(*(yaml.safe_load((REPO / mounts[f][0]).read_text()) for f in files))
    for name, pipeline in merged["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in merged[kind], f"pipeline {name}: {kind[:-1]} {component} is not defined"
    assert merged["service"]["pipelines"]["traces"]["exporters"] == ["debug"]


def deep_merge(base: Any, overlay: Any) -> Any:
    """How the collector merges --config files: maps merge, everything else is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        return {**base, **{k: deep_merge(base[k], v) if k in base else v for k, v in overlay.items()}}
    return overlay


def test_the_dockerfile_builds_in_stages_runs_unprivileged_and_bakes_in_no_secret(dockerfile: list[str]) -> None:
    froms = instructions(dockerfile, "FROM")
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    assert instructions(dockerfile, "ARG") == ["PYTHON_IMAGE=python:3.11-slim"]
    assert [c for c in instructions(dockerfile, "COPY") if c.startswith("--from=build")] == [
        "--from=build /opt/triplock /opt/triplock"]
    [user] = instructions(dockerfile, "USER")
    assert user.split(":")[0] not in ("0", "root")
    assert instructions(dockerfile, "EXPOSE") == ["8080"]
    assert instructions(dockerfile, "VOLUME") == ['["/var/lib/triplock"]']
    assert instructions(dockerfile, "WORKDIR")[-1] == "/var/lib/triplock"
    [check] = instructions(dockerfile, "HEALTHCHECK")
    assert "/healthz" in check
    text = (REPO / "Dockerfile").read_text()
    assert not re.search(r"^(ENV|ARG)\b.*(TOKEN|SECRET|PASSWORD|KEY)", text, re.M | re.I)
    assert "tlk_" not in text
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".git", ".venv", "triplock-keys.json", "triplock-state.sqlite", "triplock-audit.jsonl", ".env",
                 "tests", "load_tests", "triplock.toml"):
        assert docker_ignores(patterns, path), path
    # What the stages copy exists, and the ignore file keeps it in the build context.
    copied = [src for c in instructions(dockerfile, "COPY") if not c.startswith("--from") for src in c.split()[:-1]]
    assert copied == ["pyproject.toml", "README.md", "gateway", "policy", "adapters", "demo_upstream",
                      "gateway/quickstart_policy.yaml"]
    for path in copied:
        assert (REPO / path).exists(), path
        assert not docker_ignores(patterns, path), path


def docker_ignores(patterns: list[str], path: str) -> bool:
    """Whether .dockerignore's patterns leave ``path`` out of the build context (the last match wins)."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!")
        if fnmatch(path, glob):  # the paths asked about are top-level names, where Docker's match is fnmatch's
            ignored = not negated
    return ignored
