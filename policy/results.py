"""Result inspection: the legs a tool's result adds to the session.

A result carrying credentials (cloud keys, tokens, private keys, JWTs) adds P: the session now
holds private data whatever the tool was. Content from an untrusted source adds U.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from policy.conditions import NOTHING
from policy.models import Leg, ToolProfile
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
    content = result.get("content")
    # Results are decoded JSON: dict checks, not Mapping (an ABC check costs several times more).
    for item in content if isinstance(content, list) else ():
        if not isinstance(item, dict):
            continue
        uri = item.get("uri") if item.get("type") == "resource_link" else None
        if item.get("type") == "resource" and isinstance(item.get("resource"), dict):
            uri = item["resource"].get("uri")
        host = _remote_host(uri) if isinstance(uri, str) else None
        if host and not allow(host):
            return True
    return False
