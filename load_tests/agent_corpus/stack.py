"""The real parts a replay runs against: the recorded upstreams and ``triplock serve`` (API-key
auth, SQLite store, the policy under test, ``hold_wait = 0``), as subprocesses on loopback."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.identity.api_keys import KeyStore
from load_tests.agent_corpus import org
from load_tests.agent_corpus.suites import SUITES
from load_tests.harness import REPO, free_port, python, wait_ready
from tests.support import write_config

PRESETS = REPO / "policy" / "presets"
APPROVER = "corpus-approver"
WARMUP_PRINCIPAL = "corpus-warmup"
ORG_CONDITIONS = {"org_domains": [org.DOMAIN], "url_allowlist": [f"*.{org.DOMAIN}", org.DOMAIN]}


@dataclass
class Stack:
    """Where the running parts answer, and the credentials to use them."""

    mcp_url: str
    base_url: str
    control_url: str
    audit_path: Path
    keys: dict[str, str]
    approver_token: str
    workdir: Path


def policy_file(policy: str, into: Path) -> Path:
    """``controlled`` (or another preset name): the preset plus the organisation's conditions at
    policy level; otherwise ``policy`` is a file path, used as it is."""
    preset = PRESETS / f"{policy}.yaml"
    if not preset.is_file():
        path = Path(policy)
        if not path.is_file():
            raise FileNotFoundError(f"--policy {policy!r} is neither a preset name nor a policy file")
        return path.resolve()
    data = yaml.safe_load(preset.read_text())
    conditions = data.setdefault("conditions", {}) or {}
    for key, values in ORG_CONDITIONS.items():
        conditions[key] = [*conditions.get(key, []), *values]
    data["conditions"] = conditions
    out = into / "policy.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


@contextlib.contextmanager
def _process(cmd: list[str], log: Path, ready_url: str | None, env: dict[str, str] | None = None,
             ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` (output to ``log``) until the block ends; wait for ``ready_url`` first."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        try:
            if ready_url:
                try:
                    wait_ready(ready_url, proc, deadline=60.0)
                except Exception as exc:
                    raise RuntimeError(f"{cmd[2]} did not start: {exc}; see {log}") from None
            yield proc
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@contextlib.contextmanager
def running(principals: Sequence[str], policy: str = "controlled", workdir: Path | None = None) -> Iterator[Stack]:
    """Start the upstreams and the gateway with one API key per principal; stop both afterwards."""
    with contextlib.ExitStack() as stack:
        tmp = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agent-corpus-")))
        keys_file = tmp / "keys.json"
        store = KeyStore(keys_file)
        keys = {p: store.create(p, ("agents-run",))[0] for p in dict.fromkeys([*principals, WARMUP_PRINCIPAL])}
        approver_token = secrets.token_urlsafe(24)
        up_port, gw_port = free_port(), free_port()
        upstreams = [{"name": name, "transport": "http", "url": f"http://127.0.0.1:{up_port}/{name}/mcp"}
                     for name in SUITES]
        audit = tmp / "audit.jsonl"
        config = write_config(
            tmp / "triplock.toml", gw_port, upstreams,
            auth={"mode": "api_key", "api_keys_file": str(keys_file)},
            store={"kind": "sqlite", "path": str(tmp / "state.sqlite")},
            policy={"file": str(policy_file(policy, tmp))},
            approvals={"hold_wait": 0},
            audit={"path": str(audit)},
            limits={"requests_per_second": 0, "sessions_per_principal": 0},
        )
        base = f"http://127.0.0.1:{gw_port}"
        stack.enter_context(_process([python(), "-m", "load_tests.agent_corpus.upstream", "--port", str(up_port)],
                                     tmp / "upstream.log", f"http://127.0.0.1:{up_port}/control/executed"))
        stack.enter_context(_process([python(), "-m", "gateway.cli", "serve", "--config", str(config)],
                                     tmp / "gateway.log", f"{base}/readyz",
                                     env={"TRIPLOCK_APPROVER_TOKENS": f"{APPROVER}={approver_token}"}))
        yield Stack(f"{base}/mcp", base, f"http://127.0.0.1:{up_port}/control", audit, keys, approver_token, tmp)
