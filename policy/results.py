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
    profile: ToolProfile, result: Mapping[str, Any], arguments: Mapping[str, Any] | None = None
) -> frozenset[Leg]:
    """Legs `result` adds; `profile` must be compiled under the current policy revision."""
    legs: set[Leg] = set()
    if Leg.U in profile.legs:
        out = profile.plan.conditions.evaluate(arguments) if arguments else NOTHING
        if Leg.U not in out.drop:
            legs.add(Leg.U)
    allow = profile.plan.url_allowlist
    content = result.get("content")
    for item in content if isinstance(content, list) else ():
        if not isinstance(item, Mapping):
            continue
        uri = item.get("uri") if item.get("type") == "resource_link" else None
        if item.get("type") == "resource" and isinstance(item.get("resource"), Mapping):
            uri = item["resource"].get("uri")
        host = _remote_host(uri) if isinstance(uri, str) else None
        if host and not allow(host):
            legs.add(Leg.U)
    if any(has_secret(text) for text in iter_strings(result)):
        legs.add(Leg.P)
    return frozenset(legs)
