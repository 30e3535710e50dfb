"""Profile sources and their precedence: policy > trusted annotations > catalog/heuristics > unknown."""

from __future__ import annotations

import pytest

from policy import CompiledPolicy, Effect, Leg
from policy.catalog import lookup_app, split_app_list
from policy.classify import tokens

from .conftest import tool

P, U, E = Leg.P, Leg.U, Leg.E
READ_ONLY = {"readOnlyHint": True, "openWorldHint": False}


def policy(**upstreams: dict) -> CompiledPolicy:
    return CompiledPolicy.from_dict({"upstreams": upstreams})


def test_policy_entry_beats_annotations_and_heuristics() -> None:
    pol = policy(svc={"trust_annotations": True, "tools": {"send_report": {"legs": ["P"], "effect": "read"}}})
    p = pol.profile("svc", tool("send_report", annotations={"readOnlyHint": False}))
    assert (p.source, p.effect, p.legs) == ("policy", Effect.READ, {P})
    assert "upstreams.svc.tools.send_report" in p.source_detail


def test_policy_glob_entry_and_exact_wins_over_glob() -> None:
    pol = policy(svc={"tools": {"get_*": {"legs": ["P", "U"], "effect": "read"}, "get_secret": {"legs": ["P"]}}})
    assert pol.profile("svc", tool("get_thing")).legs == {P, U}
    assert pol.profile("svc", tool("get_secret")).legs == {P}


def test_partial_entry_keeps_lower_source_for_missing_fields() -> None:
    pol = policy(svc={"tools": {"send_email": {"category": "bulk_mail"}}})
    p = pol.profile("svc", tool("send_email"))
    assert p.category == "bulk_mail" and p.effect is Effect.WRITE and p.source == "heuristic"


def test_annotations_ignored_unless_upstream_trusted() -> None:
    hostile = tool("zap", annotations=READ_ONLY)
    assert policy(svc={}).profile("svc", hostile).source == "unknown"
    trusted = policy(svc={"trust_annotations": True}).profile("svc", hostile)
    assert (trusted.source, trusted.effect, trusted.legs) == ("annotations", Effect.READ, {P})


@pytest.mark.parametrize(
    ("ann", "effect", "legs"),
    [
        ({"readOnlyHint": True}, Effect.READ, {U}),  # openWorldHint defaults to true: U, and no URL argument
        ({"readOnlyHint": False, "destructiveHint": False, "openWorldHint": False}, Effect.WRITE, {E}),
        ({"readOnlyHint": False}, Effect.DESTRUCTIVE, {U, E}),  # destructiveHint defaults to true
    ],
)
def test_annotation_defaults_follow_mcp(ann: dict, effect: Effect, legs: set[Leg]) -> None:
    p = policy(svc={"trust_annotations": True}).profile("svc", tool("zap", annotations=ann))
    assert (p.effect, p.legs) == (effect, legs)


def test_catalog_app_only_by_declared_app_never_by_upstream_name() -> None:
    pol = policy(mail={"app": "gmail"})
    send = pol.profile("mail", tool("send_message"))
    assert (send.source, send.category, send.legs, send.effect) == ("catalog", "email_send", {E}, Effect.WRITE)
    read = pol.profile("mail", tool("search_threads"))
    assert (read.source, read.legs, read.effect) == ("catalog", {P, U}, Effect.READ)
    named = pol.profile("gmail", tool("send_message"))  # an upstream named like an app is not that app
    assert (named.source, named.category, named.legs) == ("heuristic", "email_send", {E})


@pytest.mark.parametrize(
    ("upstream", "name", "category"),
    [
        ("github", "merge_pull_request", "github_push_merge_release"),
        ("github", "create_release", "github_write"),
        ("slack", "post_message", "slack_post_to_channel_or_external_dm"),
        ("salesforce", "update_record", "salesforce_record_create_update_delete"),
        ("google_drive", "delete_file", "sharepoint_drive_bulk_write_or_delete"),
        ("google_drive", "update_file", "drive_create_or_update_within_owned_folder"),
        ("jira", "comment_on_issue", "jira_comment_on_owned_ticket"),
        ("calendar", "create_event", "calendar_invite_external"),
        ("stripe", "transfer_funds", "financial_transaction_any"),
    ],
)
def test_catalog_categories(upstream: str, name: str, category: str) -> None:
    assert policy(**{upstream: {"app": upstream}}).profile(upstream, tool(name)).category == category


def test_web_search_reads_are_untrusted_and_external() -> None:
    assert policy(web={"app": "web_search"}).profile("web", tool("search")).legs == {U, E}
    # by name alone, 'web_search' is no app: a read with no noun and no argument is P+U
    assert policy().profile("web_search", tool("search")).legs == {P, U}


@pytest.mark.parametrize(
    ("name", "effect", "legs", "category"),
    [
        ("read_inbox", Effect.READ, {P, U}, None),
        ("send_email", Effect.WRITE, {E}, "email_send"),
        ("search_drive", Effect.READ, {P, U}, None),  # shared files are written by others
        ("fetch_url", Effect.READ, {U, E}, None),
        ("update_crm_record", Effect.WRITE, {E}, "salesforce_record_create_update_delete"),
        ("post_to_chat", Effect.WRITE, {E}, "slack_post_to_channel_or_external_dm"),
        ("deleteRepository", Effect.DESTRUCTIVE, {E}, "github_push_merge_release"),
        ("get_message", Effect.READ, {P, U}, None),  # 'message' after a read verb is a noun
        ("get_or_create_user", Effect.WRITE, {E}, None),  # not provably read-only
        ("list_things", Effect.READ, {P, U}, None),
    ],
)
def test_verb_heuristics(name: str, effect: Effect, legs: set[Leg], category: str | None) -> None:
    p = policy().profile("acme", tool(name))
    assert (p.source, p.effect, p.legs, p.category) == ("heuristic", effect, legs, category)


def test_no_recognisable_verb_is_unknown() -> None:
    p = policy().profile("acme", tool("quux"))
    assert (p.source, p.effect, p.legs) == ("unknown", Effect.WRITE, {P, U, E})


def test_profile_reemits_annotations_from_our_view() -> None:
    pol = policy(svc={"tools": {"zap": {"legs": ["E"], "effect": "destructive"}}})
    p = pol.profile("svc", tool("zap", annotations={"readOnlyHint": True, "destructiveHint": False}))
    assert p.mcp_annotations == {
        "readOnlyHint": False,
        "destructiveHint": True,
        "idempotentHint": False,
        "openWorldHint": True,
    }
    assert p.namespaced == "svc__zap"


def test_tokens_and_app_lookup() -> None:
    assert tokens("sendEmail-v2.now") == ["send", "email", "v2", "now"]
    assert lookup_app("Google Drive") is lookup_app("google-drive") is lookup_app("GDRIVE")
    known, unknown = split_app_list("Gmail; Web Search | atlassian-rovo  Box thing")
    assert [a.name for a in known] == ["gmail", "web_search", "atlassian_rovo", "box"]
    assert unknown == ["thing"]


def test_upstream_names_with_separator_are_rejected() -> None:
    with pytest.raises(ValueError, match="separator"):
        CompiledPolicy.from_dict({"upstreams": {"a__b": {}}})
