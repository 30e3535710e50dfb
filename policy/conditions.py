"""Argument-aware conditions, compiled per tool at profile time and evaluated per call.

The declarative schema lives in `policy.config.Conditions` (see its docstring for why it is not
CEL). Here each tool gets only the checks that can matter to it, bound to the argument names
it uses, so a call costs a few dict lookups and at most one regex per path argument.

Relaxations (fewer legs) need positive evidence: a recipient or URL argument must be present
and every one of them must be internal/allowlisted; anything unparseable counts as external.
One relaxation needs the opposite evidence: a tool whose only way out is its recipients (a
calendar event, a file share: `RECIPIENT_ONLY_CATEGORIES`) sends nothing out when a call names
no recipient at all (every recipient argument absent or empty, and no argument the tool does not
declare), so E is dropped and the category becomes the internal one. URLs are matched with or
without a scheme ('www.example.com', 'docs.example.com/page', '//host/x': `url_host`).
Restrictions (deny a path, raise an amount's category) look at the arguments actually sent,
whatever the tool's schema declares.
"""

from __future__ import annotations

import math
import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from policy.config import AmountThreshold, Conditions
from policy.globs import DomainMatcher, HostMatcher, compile_path_globs
from policy.models import NO_LEGS, Leg

_ADDRESS = re.compile(r"[^\s<>,;\"']+@[^\s<>,;\"']+")
_PLAIN_ADDRESS = re.compile(r"[^\s<>,;\"'@]+@[^\s<>,;\"'@]+")
_CURRENCY = re.compile(r"[\s,$€£¥_]|usd|eur|gbp", re.IGNORECASE)
# A URL without a scheme: optional userinfo, a host name or [IPv6] literal, optional port, then a
# path, query or fragment. Anything else ('javascript:...', text with spaces) is unparseable.
_SCHEMELESS = re.compile(
    r"(?:[^\s/?#@\\]*@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?)(?::\d{1,5})?(?:[/?#]\S*)?"
)
_URL_SCHEMES = ("http", "https", "ws", "wss")
_HAS_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# Categories of tools whose only way out is their recipients: with none named, nothing leaves.
RECIPIENT_ONLY_CATEGORIES = frozenset({"calendar_invite_external", "drive_share_external"})


class Outcome(NamedTuple):
    """What the arguments of one call change about the tool's profile."""

    drop: frozenset[Leg] = NO_LEGS
    category: str | None = None
    write: bool = False
    deny: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


NOTHING = Outcome()


def merge_conditions(layers: Iterable[Conditions | None]) -> Conditions:
    """Union of condition layers (policy, upstream, tool): lists concatenate, maps update."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        for key in type(layer).model_fields:
            value = getattr(layer, key)
            if isinstance(value, list):
                prior = merged.setdefault(key, [])
                prior.extend(v for v in value if v not in prior)
            elif isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
    return Conditions.model_validate(merged)


def _strings(value: Any) -> list[str] | None:
    """A string or a list of strings (or of {'email'|'address'|'url': ...}); None if anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        out: list[str] = []
        for item in value:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, Mapping):
                inner = item.get("email") or item.get("address") or item.get("url")
                if not isinstance(inner, str):
                    return None
                out.append(inner)
            else:
                return None
        return out
    return None


def _domains(values: list[str]) -> list[str] | None:
    found: list[str] = []
    for text in values:
        if _PLAIN_ADDRESS.fullmatch(text):  # the common case, without findall's list
            found.append(text.rsplit("@", 1)[1])
            continue
        addresses = _ADDRESS.findall(text)
        if not addresses:
            return None
        found.extend(addr.rsplit("@", 1)[1] for addr in addresses)
    return found


def url_host(text: str) -> str | None:
    """The host a URL names, lower-case: 'https://Docs.Example.com/x', 'www.example.com',
    'docs.example.com/page' and '//host/x' all have one. None when unparseable (counts as
    external): another scheme ('ftp:', 'javascript:'), whitespace inside, or a backslash (which
    browsers read as '/', so 'evil.test\\@good.example' would go to evil.test)."""
    value = text.strip()
    if not value or "\\" in value:
        return None
    try:
        if _HAS_SCHEME.match(value):
            parts = urlsplit(value)
            return parts.hostname if parts.scheme in _URL_SCHEMES else None
        match = _SCHEMELESS.fullmatch(value[2:] if value.startswith("//") else value)
    except ValueError:
        return None
    return match.group(1).lower().strip("[]") if match else None


def _empty(value: Any) -> bool:
    """True for an argument that names nobody: absent, '', blanks, or a list of such."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple):
        return all(_empty(item) for item in value)
    return isinstance(value, Mapping) and not value


def normalise_path(text: str) -> str:
    """Lower-case, '/'-separated, percent-decoded, with '..' resolved, for deny-glob matching."""
    p = text.strip()
    if "%" in p:
        p = unquote(p)
    p = p.replace("\\", "/")
    if p.lower().startswith("file://"):
        p = p[7:]
    return posixpath.normpath(p).lower() if p else p


# A value that may be a path although its argument is not named like one: no whitespace, and a
# separator or a leading '.' or '~'.
_PATHISH = re.compile(r"[.~]\S*|\S*[/\\]\S*")


def _over(value: Any, threshold: AmountThreshold) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isnan(value) or abs(value) > threshold.over
    if isinstance(value, str):
        try:
            number = float(_CURRENCY.sub("", value))
        except ValueError:
            return True  # unreadable amount: assume the worst
        return math.isnan(number) or abs(number) > threshold.over
    return value is not None  # a structure we cannot read as an amount


class CompiledConditions:
    """The checks that apply to one tool."""

    __slots__ = (
        "_amount_names",
        "_amounts",
        "_declared",
        "_deny_re",
        "_destination_names",
        "_hosts",
        "_internal_category",
        "_orgs",
        "_path_args",
        "_recipient_args",
        "_recipient_names",
        "_recipient_only",
        "_url_args",
        "active",
    )

    def __init__(
        self,
        cond: Conditions,
        legs: frozenset[Leg],
        category: str | None,
        declared_args: frozenset[str],
        explicit: bool,
    ) -> None:
        # relaxations apply to arguments the tool declares, or to any when set on the tool itself
        def bound(names: list[str]) -> tuple[str, ...]:
            return tuple(n for n in names if explicit or n in declared_args)

        self._orgs = DomainMatcher(cond.org_domains)
        self._recipient_args = bound(cond.recipient_args) if self._orgs and Leg.E in legs else ()
        self._internal_category = cond.internal_categories.get(category or "", category)
        self._hosts = HostMatcher(cond.url_allowlist)
        self._url_args = bound(cond.url_args) if self._hosts and (legs & {Leg.E, Leg.U}) else ()
        self._deny_re = compile_path_globs(cond.deny_read_paths)
        self._path_args = frozenset(cond.path_args)
        self._amounts = tuple(cond.amounts)
        # one set-disjointness test per kind skips the kinds a call's arguments cannot trigger
        self._destination_names = frozenset(self._recipient_args + self._url_args)
        self._amount_names = frozenset(n for t in self._amounts for n in t.args)
        # a tool whose only way out is its recipients, and that declares a recipient argument
        self._recipient_names = frozenset(cond.recipient_args)
        self._declared = declared_args
        self._recipient_only = (
            Leg.E in legs
            and category in RECIPIENT_ONLY_CATEGORIES
            and not self._recipient_names.isdisjoint(declared_args)
        )
        self.active = bool(self._destination_names or self._deny_re or self._amounts or self._recipient_only)

    def evaluate(self, args: Mapping[str, Any], trail: bool = False) -> Outcome:
        """Evaluate against one call's arguments; `trail` also records human-readable notes."""
        if not self.active or not (args or self._recipient_only):
            return NOTHING
        deny = self._denied_paths(args) if self._deny_re is not None else ()
        notes: list[str] | None = [] if trail else None  # decide() skips formatting notes
        drop: frozenset[Leg] = NO_LEGS
        category: str | None = None
        if self._recipient_only or not self._destination_names.isdisjoint(args):
            drop, category = self._destinations(args, notes)
        write = False
        if not self._amount_names.isdisjoint(args):
            for threshold in self._amounts:
                for name in threshold.args:
                    if name in args and _over(args[name], threshold):
                        category, write = threshold.category, True
                        if notes is not None:
                            notes.append(f"amount argument {name!r} is over {threshold.over:g}: {threshold.category}")
        if not (drop or deny or write or category or notes):
            return NOTHING
        return Outcome(drop, category, write, deny, tuple(notes or ()))

    def _destinations(self, args: Mapping[str, Any], notes: list[str] | None) -> tuple[frozenset[Leg], str | None]:
        """E is dropped only if some destination argument is present and every one is internal;
        U only if every URL argument is allowlisted."""
        destinations, external, recipients = 0, False, False
        for name in self._recipient_args:
            value = args.get(name)
            if value in (None, "", []):  # a blank value is a destination nobody can read: external
                continue
            destinations += 1
            recipients = True
            strs = _strings(value)
            doms = _domains(strs) if strs else None
            bad = [d for d in doms if not self._orgs(d)] if doms is not None else ["(unparseable)"]
            if bad:
                external = True
                if notes is not None:
                    notes.append(f"recipient argument {name!r} is external ({', '.join(sorted(set(bad)))})")
        url_ok: bool | None = None
        for name in self._url_args:
            value = args.get(name)
            if value in (None, "", []):  # a blank value is a destination nobody can read: external
                continue
            destinations += 1
            hosts = [url_host(u) for u in (_strings(value) or [""])]
            if all(self._hosts(h) for h in hosts):
                url_ok = url_ok is not False
                if notes is not None:
                    notes.append(f"URL argument {name!r} host is allowlisted")
            else:
                url_ok, external = False, True
                if notes is not None:
                    notes.append(f"URL argument {name!r} host is not allowlisted ({', '.join(map(str, hosts))})")
        drop: set[Leg] = set()
        category = None
        if destinations and not external:
            drop.add(Leg.E)
            if recipients:
                if notes is not None:
                    notes.append("all recipients are inside the organisation's domains: not E")
                category = self._internal_category
        elif self._recipient_only and not external and self._names_nobody(args):
            drop.add(Leg.E)
            category = self._internal_category
            if notes is not None:
                notes.append("no recipient argument names anyone, and recipients are this tool's only way out: not E")
        if url_ok:
            drop.add(Leg.U)
        return frozenset(drop), category

    def _names_nobody(self, args: Mapping[str, Any]) -> bool:
        """True when every recipient argument is absent or empty and the call sends no argument the
        tool does not declare (an undeclared one might be a recipient by another name)."""
        declared, recipients = self._declared, self._recipient_names
        return all(key in declared and (key not in recipients or _empty(value)) for key, value in args.items())

    def _denied_paths(self, args: Mapping[str, Any]) -> tuple[str, ...]:
        deny_re = self._deny_re
        assert deny_re is not None
        hits: list[str] = []
        for key, value in args.items():
            named = key in self._path_args
            if value.__class__ is str:
                if (named or _PATHISH.fullmatch(value)) and deny_re.fullmatch(normalise_path(value)):
                    hits.append(f"argument {key!r} names a path that must never be read ({value})")
                continue
            for text in _strings(value) or ():
                if (named or _PATHISH.fullmatch(text)) and deny_re.fullmatch(normalise_path(text)):
                    hits.append(f"argument {key!r} names a path that must never be read ({text})")
        return tuple(hits)
