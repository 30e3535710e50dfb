"""Value provenance: the values that arrived in untrusted content, and the calls that carry them on.

An injected instruction works through values: the attacker's address, link, account number or
file path, copied by the agent from what it read into what it writes. Triplock remembers the
values that arrived in untrusted content (per session and per principal, bounded, expiring) and
holds a side-effecting call whose destination or content carries one of them, whatever the
recipient's domain: a phishing mail to a colleague carrying the attacker's link is held although
the colleague is internal.

Two pure functions, both on the values' normalised keys ('host:evil.example',
'email:eve@evil.example', 'iban:DE89370400440532013000', 'number:4111111111', 'phone:4915112345678',
'path:/home/me/.ssh/id_rsa'):

- `untrusted_values(result, ...)`: the values a result brings in. Identity and addressing fields
  that the upstream system maintains (`from`, `sender`, `to`, `organizer`, `participants`, ...)
  are not counted: the mail system vouches for who wrote a message, so replying to a colleague
  who wrote is not carrying the attacker's value; an attacker's own address as sender is external,
  and a send to it is E anyway. What the text's author writes (body, subject, description, a
  `reply_to`) is counted. Values the call itself sent (its own arguments echoed back) are not new.
- `carried_values(arguments)`: the values a call's arguments carry, with the argument's name.

Hosts on the URL allowlist are never counted: they are the organisation's own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson

# Keys whose values the upstream's system maintains (who wrote, who received), not the author's text.
IDENTITY_KEYS = frozenset(
    {
        *("from", "sender", "author", "organizer", "organiser", "owner", "created_by", "creator"),
        *("user", "username", "user_name", "from_email", "sender_email", "author_email", "owner_email"),
        *("to", "cc", "bcc", "recipients", "recipient", "participants", "attendees", "members", "invitees"),
        *("assignee", "assignees", "reviewers"),
    }
)
# Header lines of plain-text mail or events that name identities, not content.
_HEADER = re.compile(r"^\s*(from|sender|to|cc|bcc|organizer|organiser|author|attendees|participants)\s*:", re.I)

_URL = re.compile(r"(?:https?|wss?|ftp)://[^\s\"'<>()\[\]{}]+|\bwww\.[^\s\"'<>()\[\]{}]+", re.I)
# A host followed by a path, without a scheme: 'evil.example/collect?x=1'
_BARE_URL = re.compile(r"\b((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})(?::\d{1,5})?/[^\s\"'<>]*", re.I)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_PHONE = re.compile(r"(?<![\w+])\+\d[\d ().-]{6,18}\d(?!\w)|(?<!\w)\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\w)")
_NUMBER = re.compile(r"(?<![\w.,:-])\d{9,20}(?![\w]|[.,:-]\d)")
_PATH = re.compile(r"(?<![\w/:.])(?:~|\.{1,2})?/(?:[\w.@-]+/)+[\w.@-]+")
_HOST_OF = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//(?:[^@/?#]*@)?(\[[^\]]*\]|[^:/?#]*)", re.I)

MAX_VALUES_PER_RESULT = 64
MAX_SCAN_CHARS = 1 << 20  # text beyond this is not scanned: the result counts as saturating the memory

HostAllowed = Callable[[str], bool]


def _host(url: str) -> str | None:
    text = url if "://" in url else "//" + url
    match = _HOST_OF.match(text)
    host = match.group(1).lower().strip("[]").rstrip(".") if match else ""
    return _www(host) or None


def _www(host: str) -> str:
    # 'www.evil.example' and 'evil.example' are one site to an attacker
    return host[4:] if host.startswith("www.") else host


def values_in_text(text: str, allowed: HostAllowed | None = None) -> dict[str, str]:
    """Normalised value keys found in one string -> the value as it appeared (for reasons)."""
    found: dict[str, str] = {}
    if not text or len(text) < 6:
        return found
    if "/" in text or "www." in text.lower():
        for match in _URL.finditer(text):
            host = _host(match.group(0).rstrip(".,;"))
            if host and not (allowed and allowed(host)):
                found.setdefault(f"host:{host}", match.group(0).rstrip(".,;"))
        for match in _BARE_URL.finditer(text):
            host = _www(match.group(1).lower())
            if not (allowed and allowed(host)):
                found.setdefault(f"host:{host}", match.group(0).rstrip(".,;"))
        for match in _PATH.finditer(text):
            if "://" not in text[max(0, match.start() - 3) : match.start() + 1]:
                found.setdefault(f"path:{match.group(0)}", match.group(0))
    if "@" in text:
        for match in _EMAIL.finditer(text):
            address = match.group(0).lower()
            found.setdefault(f"email:{address}", match.group(0))
    if any(c.isdigit() for c in text):
        for match in _IBAN.finditer(text):
            found.setdefault(f"iban:{match.group(0).replace(' ', '')}", match.group(0))
        for match in _PHONE.finditer(text):
            digits = re.sub(r"\D", "", match.group(0))
            if 8 <= len(digits) <= 15:
                found.setdefault(f"phone:{digits}", match.group(0))
        for match in _NUMBER.finditer(text):
            found.setdefault(f"number:{match.group(0)}", match.group(0))
    return found


def _plain_text(text: str) -> str:
    if ":" not in text:
        return text
    return "\n".join(line for line in text.splitlines() if not _HEADER.match(line))


def _strings(value: Any, key: str | None = None) -> Iterator[str]:
    """Every string in a JSON value, except under identity keys; JSON inside a string is walked too."""
    if key is not None and key.lower() in IDENTITY_KEYS:
        return
    if isinstance(value, str):
        stripped = value.lstrip()
        if stripped[:1] in ("{", "[") and len(value) <= MAX_SCAN_CHARS:
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
            else:
                if isinstance(parsed, dict | list):
                    yield from _strings(parsed)
                    return
        yield _plain_text(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and k not in ("type", "mimeType", "annotations", "_meta"):
                yield from _strings(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def untrusted_values(
    result: Mapping[str, Any],
    arguments: Mapping[str, Any] | None = None,
    allowed: HostAllowed | None = None,
) -> tuple[dict[str, str], bool]:
    """Values an untrusted result brings in (key -> the value as it appeared), and whether the
    result had more than Triplock looks at (then the memory counts as saturated: fail closed)."""
    own = carried_keys(arguments) if arguments else frozenset()
    found: dict[str, str] = {}
    scanned = 0
    saturated = False
    parts = [result.get(k) for k in ("content", "structuredContent", "contents", "messages") if k in result]
    for text in _strings(parts):
        scanned += len(text)
        if scanned > MAX_SCAN_CHARS:
            saturated = True
            break
        for key, shown in values_in_text(text, allowed).items():
            if key not in own and key not in found:
                found[key] = shown
                if len(found) >= MAX_VALUES_PER_RESULT:
                    return found, True
    return found, saturated


def carried_values(arguments: Mapping[str, Any], allowed: HostAllowed | None = None) -> list[tuple[str, str, str]]:
    """(argument name, value key, value as written) for every value the arguments carry."""
    out: list[tuple[str, str, str]] = []
    for name, value in arguments.items():
        for text in _argument_strings(value):
            for key, shown in values_in_text(text, allowed).items():
                out.append((str(name), key, shown))
    return out


def carried_keys(arguments: Mapping[str, Any]) -> frozenset[str]:
    """The value keys the arguments carry (no allowlist: the call's own values, whatever they are)."""
    return frozenset(key for _name, key, _shown in carried_values(arguments))


def _argument_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _argument_strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _argument_strings(v)
    elif isinstance(value, int) and not isinstance(value, bool) and value >= 10**8:
        yield str(value)  # an account or phone number sent as a JSON number


def kind_of(key: str) -> str:
    """'host', 'email', 'iban', 'number', 'phone' or 'path': the kind of a value key."""
    return key.split(":", 1)[0]


__all__ = [
    "IDENTITY_KEYS",
    "MAX_VALUES_PER_RESULT",
    "carried_keys",
    "carried_values",
    "kind_of",
    "untrusted_values",
    "values_in_text",
]
