"""Result inspection: the legs a tool's, resource's or prompt's result adds to the session.

A result carrying credentials (cloud keys, tokens, private keys, JWTs) adds P: the session now
holds private data whatever the tool was. Content from an untrusted source adds U.

Results understood: `tools/call` (`content`: content blocks), `resources/read` (`contents`:
resource contents, each with its own `uri`) and `prompts/get` (`messages`: each with one content
block, or a list of them). Secrets are looked for in every string of the result (keys included);
a base64 `blob` is not decoded, so a secret inside binary content goes unseen: classify such
resources P in the policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from policy.conditions import NOTHING
from policy.globs import HostMatcher
from policy.models import Leg
from policy.profile import ToolProfile
from policy.secrets import has_secret, iter_strings


def _remote_host(uri: str) -> str | None:
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "invalid"
    return parts.hostname if parts.scheme in ("http", "https") else None


def result_legs(
    profile: ToolProfile,
    result: Mapping[str, Any],
    arguments: Mapping[str, Any] | None = None,
    known: frozenset[Leg] = frozenset(),
) -> frozenset[Leg]:
    """Legs `result` adds; `profile` must be compiled under the current policy revision.

    Legs in `known` (the session has them already) are not looked for again: once a session
    holds private data, scanning every later result for credentials cannot change anything.
    """
    legs: set[Leg] = set()
    if Leg.U not in known and _adds_untrusted(profile, result, arguments):
        legs.add(Leg.U)
    if Leg.P not in known and any(has_secret(text) for text in iter_strings(result)):
        legs.add(Leg.P)
    return frozenset(legs)


def _adds_untrusted(profile: ToolProfile, result: Mapping[str, Any], arguments: Mapping[str, Any] | None) -> bool:
    if Leg.U in profile.legs:
        out = profile.plan.conditions.evaluate(arguments) if arguments else NOTHING
        if Leg.U not in out.drop:
            return True
    allow = profile.plan.url_allowlist
    # Results are decoded JSON: dict checks, not Mapping (an ABC check costs several times more).
    # All three shapes are looked at whatever the profile's kind: an odd result gains U, never loses it.
    content = result.get("content")
    if isinstance(content, list) and _remote_item(content, allow):
        return True
    contents = result.get("contents")  # resources/read: each item is the resource's own contents
    if isinstance(contents, list):
        for item in contents:
            uri = item.get("uri") if isinstance(item, dict) else None
            host = _remote_host(uri) if isinstance(uri, str) else None
            if host and not allow(host):
                return True
    messages = result.get("messages")  # prompts/get
    if isinstance(messages, list):
        for message in messages:
            block = message.get("content") if isinstance(message, dict) else None
            if _remote_item(block if isinstance(block, list) else [block], allow):
                return True
    return False


def _remote_item(items: list[Any], allow: HostMatcher) -> bool:
    """True when a content block is a resource link or embedded resource on a remote http(s) host
    outside the allowlist."""
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        uri = item.get("uri") if kind == "resource_link" else None
        if kind == "resource" and isinstance(item.get("resource"), dict):
            uri = item["resource"].get("uri")
        host = _remote_host(uri) if isinstance(uri, str) else None
        if host and not allow(host):
            return True
    return False
