"""The conformance suite's client scenarios with Triplock as the client (its upstream side).

Each scenario starts the suite's scenario server and runs triplock_client.py, which starts a
real `triplock serve` with that server as its upstream and drives the scenario's calls through
it with the SDK client. The full sweep (every scenario of both pinned suites) is
``python tests/conformance/run_client.py``; expected_failures_client.txt explains each failure.
Here, to keep CI short, a representative subset: SEP-1699 resumption, OAuth client credentials
found by discovery (client_secret_basic and private_key_jwt), and the 2026-07-28 scenarios that
need more than "call the first tool" (``Mcp-Param-*`` headers from ``x-mcp-header``, schemas kept
verbatim, a ``$ref`` never fetched, input-required results answered and retried with the
upstream's ``requestState``).
"""

from __future__ import annotations

import pytest

from tests.conformance import run_client
from tests.conformance import run_conformance as rc
from tests.conformance import run_requirements as rr
from tests.conformance.test_conformance import skip_or_fail

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(autouse=True, scope="module")
def _suite_installed() -> None:
    if not rc.is_installed():
        skip_or_fail(f"MCP conformance suite not installed: run `npm ci` in {rc.HERE} (the CI script does)")


@pytest.mark.parametrize(
    ("suite", "scenario", "checks", "revision"),
    [
        ("0.1", "sse-retry", 3, None),  # reconnects with Last-Event-ID after the server's retry:
        ("0.1", "auth/client-credentials-basic", 14, None),  # PRM + AS discovery, client_secret_basic, a token used
        ("0.2", "auth/client-credentials-jwt", 14, None),  # the same with an RFC 7523 client assertion
        ("0.2", "auth/wif-jwt-bearer", 14, None),  # the workload's JWT, from a file, as an RFC 7523 grant
        ("0.2", "http-custom-headers", 18, "2026-07-28"),  # Mcp-Param-* mirrored and encoded, null omitted
        ("0.2", "json-schema-2020-12-preservation", 9, "2026-07-28"),  # the listed inputSchema echoed verbatim
        ("0.2", "json-schema-ref-no-deref", 1, "2026-07-28"),  # a network $ref in a schema is never fetched
        ("0.2", "sep-2322-client-request-state", 5, "2026-07-28"),  # input_required answered, state echoed
    ],
)
def test_client_scenario_passes_with_triplock_as_the_client(
    suite: str, scenario: str, checks: int, revision: str | None
) -> None:
    result = run_client.run_client_scenario(suite, scenario, revision)
    assert result.failures == ()
    assert result.warnings == ()
    assert result.successes == checks


@pytest.mark.parametrize(
    ("suite", "scenario", "at_least"),
    [
        # An admin signs in once (signin_admin.py, headless Chromium); the check count grows with the requests
        # made, so it is a floor here.
        ("0.2", "auth/basic-cimd", 14),  # a client ID metadata document as client_id, PKCE S256, resource
        ("0.2", "auth/scope-step-up", 25),  # 403 insufficient_scope: signed in again with the union of scopes
        ("0.2", "auth/authorization-server-migration", 19),  # a new AS: registered there, nothing of the old reused
        ("0.2", "auth/iss-wrong-issuer", 7),  # RFC 9207: a response naming another issuer is refused
        ("0.2", "auth/enterprise-managed-authorization", 15),  # SEP-990: ID token -> ID-JAG -> access token
        ("0.1", "auth/2025-03-26-oauth-metadata-backcompat", 18),  # no PRM: the server's root names the AS
        ("0.2", "auth/dpop", 12),  # RFC 9449: a DPoP-bound token from the sign-in, a fresh proof per request
        ("0.2", "auth/dpop-nonce", 13),  # the same, retried once with the AS's and the upstream's nonce
    ],
)
def test_authorization_code_and_exchange_scenarios_pass(suite: str, scenario: str, at_least: int) -> None:
    result = run_client.run_client_scenario(suite, scenario)
    assert result.failures == ()
    assert result.warnings == ()
    assert result.successes >= at_least


def test_every_expected_failure_is_explained() -> None:
    expected = run_client.load_expected()
    assert expected, "expected_failures_client.txt lists nothing"
    assert all(why for why in expected.values()), [k for k, why in expected.items() if not why]


def test_expected_failures_name_scenarios_the_pinned_suites_list() -> None:
    """Every entry is `SUITE@REVISION/scenario` for a client scenario that suite lists (no stale names)."""
    listed = {suite: run_client.client_scenarios(suite) for suite in run_client.CLIS}
    unknown = []
    for key in run_client.load_expected():
        suite, _, rest = key.partition("@")
        revision, _, scenario = rest.partition("/")
        if suite not in listed or scenario not in listed[suite] or revision not in ("default", *rr.REVISIONS):
            unknown.append(key)
    assert unknown == []
