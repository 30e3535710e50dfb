"""The conformance suite's client scenarios with Triplock as the client (its upstream side).

Each scenario starts the suite's scenario server and runs triplock_client.py, which starts a
real `triplock serve` with that server as its upstream and drives the scenario's calls through
it with the SDK client. The full sweep (every scenario of both pinned suites) is
``python tests/conformance/run_client.py``; expected_failures_client.txt explains each failure.
Here, to keep CI short, the scenarios this work made pass: SEP-1699 resumption, and OAuth client
credentials found by discovery (client_secret_basic and private_key_jwt).
"""

from __future__ import annotations

import pytest

from tests.conformance import run_client
from tests.conformance import run_conformance as rc
from tests.conformance.test_conformance import skip_or_fail

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(autouse=True, scope="module")
def _suite_installed() -> None:
    if not rc.is_installed():
        skip_or_fail(f"MCP conformance suite not installed: run `npm ci` in {rc.HERE} (the CI script does)")


@pytest.mark.parametrize(
    ("suite", "scenario", "checks"),
    [
        ("0.1", "sse-retry", 3),  # reconnects with Last-Event-ID after the server's retry:
        ("0.1", "auth/client-credentials-basic", 14),  # PRM + AS discovery, client_secret_basic, a token used
        ("0.2", "auth/client-credentials-jwt", 14),  # the same with an RFC 7523 client assertion
    ],
)
def test_client_scenario_passes_with_triplock_as_the_client(suite: str, scenario: str, checks: int) -> None:
    result = run_client.run_client_scenario(suite, scenario)
    assert result.failures == ()
    assert result.warnings == ()
    assert result.successes == checks


def test_every_expected_failure_is_explained() -> None:
    expected = run_client.load_expected()
    assert expected, "expected_failures_client.txt lists nothing"
    assert all(why for why in expected.values()), [k for k, why in expected.items() if not why]
