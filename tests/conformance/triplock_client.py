"""The client under test for the conformance suite's *client* scenarios: Triplock's upstream side.

The suite starts a scenario server and runs ``python triplock_client.py SERVER_URL`` with the
scenario's name in ``MCP_CONFORMANCE_SCENARIO`` and, for the auth scenarios, credentials in
``MCP_CONFORMANCE_CONTEXT``. This runner makes Triplock the client: it starts ``triplock serve``
with the scenario server as its one upstream (empty prefix, the passthrough policy, the context's
OAuth client as the upstream's credentials), waits until Triplock has a session with it, and then
drives the scenario's calls *through Triplock* with the official Python SDK client. What the
scenario server sees is Triplock's upstream adapter at work.

Exit status: 0 when every call the scenario expects succeeded through Triplock, else 1 (with
Triplock's own output on stderr).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script by the suite
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
from mcp import Client
from mcp.client.context import ClientRequestContext
from mcp_types import ElicitRequestParams, ElicitResult

from tests.conformance.run_conformance import free_port, require_loopback_url
from tests.conformance.signin_admin import sign_in, wait_needs_sign_in
from tests.support import PASSTHROUGH, PY, REPO, toml_value

READY_SECONDS = 20.0  # how long Triplock may take to open its session with the scenario server (a loaded CI machine)
CLIENT_CREDENTIALS = {"auth/client-credentials-basic", "auth/client-credentials-jwt"}
CIMD_URL = "https://conformance-test.local/client-metadata.json"  # as the SDK's conformance client uses
# Triplock's error when a person must sign in (again): the upstream asked for more scope (403 insufficient_scope),
# or refused a token that cannot be refreshed (e.g. its authorization server changed, SEP-2352).
SIGN_IN_AGAIN = "triplock upstreams authorize"

Call = tuple[str, dict[str, Any]]
# The calls each scenario expects of a client (tool name and arguments), in order; an empty list
# only lists the tools. A scenario that hands its calls over in MCP_CONFORMANCE_CONTEXT's
# `toolCalls` (http-custom-headers) gets those; the rest list tools and call the first one with no
# arguments, which is what every auth scenario checks for.
CALLS: dict[str, list[Call]] = {
    "initialize": [],
    "tools_call": [("add_numbers", {"a": 5, "b": 3})],
    "sse-retry": [("test_reconnection", {})],
    "elicitation-sep1034-client-defaults": [("test_client_elicitation_defaults", {})],
    # The scenario server answers only tools/list; the point is that the $ref's URI is never fetched.
    "json-schema-ref-no-deref": [],
    # SEP-2322 through Triplock: the first and third tools answer input_required (Triplock asks this
    # client mid-call and retries the upstream); the unrelated call must carry none of that state.
    "sep-2322-client-request-state": [
        ("test_mrtr_echo_state", {}), ("test_mrtr_unrelated", {}), ("test_mrtr_no_state", {}),
        ("test_mrtr_no_result_type", {}),
    ],
}
# json-schema-2020-12-preservation: echo the inputSchema of this tool, as listed, to that one.
ECHOED_SCHEMA_TOOL, ECHO_TOOL = "json_schema_2020_12_tool", "json_schema_echo"


def upstream_settings(url: str, context: dict[str, Any], workdir: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``[[upstreams]]`` entry for the scenario server and the environment it needs."""
    upstream: dict[str, Any] = {"name": "scenario", "prefix": "", "transport": "http", "url": url,
                                "connect_timeout": 10, "call_timeout": 20}
    # The suite names the revision the scenario is about; its servers also take initialize, so `auto`
    # would pick the handshake era: the operator's setting for an upstream known to speak 2026-07-28.
    if os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION") == "2026-07-28":
        upstream["protocol"] = "2026-07-28"
    env: dict[str, str] = {}
    if client_id := context.get("client_id"):
        upstream["oauth_client_id"] = client_id
        if secret := context.get("client_secret"):
            env["SCENARIO_CLIENT_SECRET"] = secret
            upstream["oauth_client_secret_env"] = "SCENARIO_CLIENT_SECRET"
        if pem := context.get("private_key_pem"):
            key = workdir / "client-key.pem"
            key.write_text(pem, encoding="utf-8")
            upstream["oauth_private_key_file"] = str(key)
    # Grants that need no person (oauth_assertion_grants.py): the credential is a file the platform
    # keeps fresh, as a Kubernetes projected token or the gateway's ID token at the IdP would be.
    if workload_jwt := context.get("valid_jwt"):  # auth/wif-jwt-bearer (SEP-1933)
        (workdir / "workload.jwt").write_text(workload_jwt, encoding="utf-8")
        upstream |= {"oauth_grant": "jwt_bearer", "oauth_assertion_file": str(workdir / "workload.jwt")}
    if id_token := context.get("idp_id_token"):  # auth/enterprise-managed-authorization (SEP-990)
        (workdir / "id_token.jwt").write_text(id_token, encoding="utf-8")
        upstream |= {"oauth_grant": "token_exchange", "oauth_id_token_file": str(workdir / "id_token.jwt"),
                     "oauth_idp_token_url": context["idp_token_endpoint"],
                     "oauth_idp_client_id": context["idp_client_id"]}
    if needs_sign_in(os.environ.get("MCP_CONFORMANCE_SCENARIO", ""), upstream):
        # The operator's choice for a server that offers only the authorization code grant: an admin signs
        # in once (signin_admin.py plays that part); pre-registered credentials stay, if the context has any.
        upstream |= {"oauth_grant": "authorization_code", "oauth_client_metadata_url": CIMD_URL}
        upstream.pop("oauth_private_key_file", None)
    return upstream, env


def needs_sign_in(scenario: str, upstream: dict[str, Any]) -> bool:
    """Whether the scenario's server offers only the authorization code grant (every auth/* scenario but the
    client credentials ones and those another grant was chosen for above)."""
    return scenario.startswith("auth/") and scenario not in CLIENT_CREDENTIALS and "oauth_grant" not in upstream


def write_config(workdir: Path, port: int, upstream: dict[str, Any]) -> Path:
    lines = ["[server]", 'host = "127.0.0.1"', f"port = {port}", "[policy]", f"file = {toml_value(str(PASSTHROUGH))}",
             "[store]", 'kind = "memory"', "[audit]", "sinks = []", "[limits]", "requests_per_second = 0",
             "[[upstreams]]"]
    lines.extend(f"{k} = {toml_value(v)}" for k, v in upstream.items())
    path = workdir / "triplock.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def wait_ready(base: str, proc: subprocess.Popen[bytes], sign_in_again: Callable[[], object] | None = None) -> None:
    """Poll /readyz until Triplock has its upstream (or fail when it exits or the deadline passes). When it
    says a person must sign in again (the upstream refused a token that cannot be refreshed: its
    authorization server changed, SEP-2352), the admin does so, once, with ``sign_in_again``."""
    end = time.monotonic() + READY_SECONDS
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"triplock exited with {proc.returncode}")
        try:
            resp = httpx.get(f"{base}/readyz", timeout=1.0)
            if resp.status_code == 200:
                return
            if sign_in_again is not None and SIGN_IN_AGAIN in resp.text and "again" in resp.text:
                sign_in_again()
                sign_in_again, end = None, time.monotonic() + READY_SECONDS
        except httpx.HTTPError:
            pass
        time.sleep(0.05)  # polling interval; readiness is checked each round
    raise TimeoutError(f"triplock was not ready within {READY_SECONDS:g}s")


async def accept_with_defaults(_ctx: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
    """Accept an elicitation, filling every field from its schema's ``default`` (SEP-1034); a
    boolean without one is confirmed (``true``)."""
    schema = getattr(params, "requested_schema", None) or {}
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    content = {name: p["default"] for name, p in props.items() if isinstance(p, dict) and "default" in p}
    content |= {name: True for name, p in props.items()
                if isinstance(p, dict) and p.get("type") == "boolean" and name not in content}
    return ElicitResult(action="accept", content=content)


def calls_for(scenario: str, context: dict[str, Any], tools: list[Any]) -> list[Call]:
    """The calls ``scenario`` expects, given what the scenario server listed (through Triplock)."""
    handed = context.get("toolCalls")
    if isinstance(handed, list) and handed:
        return [(str(c["name"]), dict(c.get("arguments") or {})) for c in handed]
    if scenario == "json-schema-2020-12-preservation":
        (schema,) = [t.input_schema for t in tools if t.name == ECHOED_SCHEMA_TOOL]
        return [(ECHO_TOOL, {"schema": schema})]
    if scenario in CALLS:
        return CALLS[scenario]
    return [(tools[0].name, {})] if tools else []


async def drive(mcp_url: str, scenario: str, context: dict[str, Any],
                sign_in_again: Callable[[], object] | None = None) -> None:
    """The scenario's calls, through Triplock, with the SDK's client; a call Triplock refuses because a person
    must sign in again (step-up, a token that cannot be refreshed) is signed in for with ``sign_in_again`` and
    retried once."""
    async with Client(mcp_url, mode="legacy", elicitation_callback=accept_with_defaults) as client:
        tools = (await client.list_tools()).tools
        for name, arguments in calls_for(scenario, context, tools):
            result = await client.call_tool(name, arguments)
            if result.is_error and sign_in_again is not None and SIGN_IN_AGAIN in str(result.content):
                await asyncio.to_thread(sign_in_again)
                result = await client.call_tool(name, arguments)
            if result.is_error:
                raise RuntimeError(f"{name} answered an error: {result.content}")


def main() -> int:
    url = sys.argv[-1]
    require_loopback_url(url)
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    with tempfile.TemporaryDirectory(prefix="triplock-client-") as tmp, tempfile.TemporaryFile() as log:
        workdir = Path(tmp)
        port = free_port()
        upstream, env = upstream_settings(url, context, workdir)
        config = write_config(workdir, port, upstream)
        proc = subprocess.Popen([PY, "-m", "gateway.cli", "serve", "--config", str(config)], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        base = f"http://127.0.0.1:{port}"
        try:
            again = None
            if upstream.get("oauth_grant") == "authorization_code":  # the admin signs in once, in a browser
                wait_needs_sign_in(base, "scenario")
                sign_in(base, "scenario")
                again = functools.partial(sign_in, base, "scenario")
            wait_ready(base, proc, again)
            asyncio.run(drive(f"{base}/mcp", scenario, context, again))
            return 0
        except Exception as exc:
            log.seek(0)
            print(f"through Triplock, {scenario}: {type(exc).__name__}: {exc}", file=sys.stderr)
            print(log.read().decode(errors="replace")[-4000:], file=sys.stderr)
            return 1
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
