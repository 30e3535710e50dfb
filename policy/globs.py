"""Glob compilation, done once at load so that matching at call time is a dict lookup or one regex."""

from __future__ import annotations

import re
from collections.abc import Iterable

_GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    """True when `pattern` has glob metacharacters (otherwise it is an exact name)."""
    return any(c in _GLOB_CHARS for c in pattern)


def _name_glob_to_regex(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class NameMatcher:
    """Matches names against exact strings (a set) and globs (one compiled alternation)."""

    __slots__ = ("_exact", "_regex", "matches_all")

    def __init__(self, patterns: Iterable[str]) -> None:
        pats = list(patterns)
        self._exact = frozenset(p for p in pats if not is_glob(p))
        globs = [p for p in pats if is_glob(p)]
        self.matches_all = "*" in globs
        self._regex = re.compile("|".join(f"(?:{_name_glob_to_regex(g)})" for g in globs)) if globs else None

    def __call__(self, name: str) -> bool:
        if name in self._exact:
            return True
        return self._regex is not None and self._regex.fullmatch(name) is not None

    def __bool__(self) -> bool:
        return bool(self._exact) or self._regex is not None


def name_glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile one tool-name glob (`*`, `?`, `[...]`) to an anchored regex."""
    return re.compile(_name_glob_to_regex(pattern) + r"\Z")


# URI globs: only '*' is special. '?' and '[' are literal because URIs are full of them (query
# strings, IPv6 hosts); a glob language that made 'https://x/a?b=1' a pattern would silently
# turn exact URIs into globs and lose their precedence.
def is_uri_glob(pattern: str) -> bool:
    """True when a resource URI pattern has a '*' (otherwise it is an exact URI)."""
    return "*" in pattern


def _uri_glob_to_regex(pattern: str) -> str:
    # '**' crosses '/', '*' stays within one path segment (and within the authority).
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def uri_glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile one resource URI glob ('*' within a segment, '**' across '/') to an anchored,
    case-sensitive regex."""
    return re.compile(_uri_glob_to_regex(pattern) + r"\Z", re.DOTALL)


class UriMatcher:
    """Matches resource URIs against exact URIs (a set) and URI globs (one compiled alternation)."""

    __slots__ = ("_exact", "_regex")

    def __init__(self, patterns: Iterable[str]) -> None:
        pats = list(patterns)
        self._exact = frozenset(p for p in pats if not is_uri_glob(p))
        globs = [p for p in pats if is_uri_glob(p)]
        alternation = "|".join(f"(?:{_uri_glob_to_regex(g)})" for g in globs)
        self._regex = re.compile(alternation, re.DOTALL) if globs else None

    def __call__(self, uri: str) -> bool:
        if uri in self._exact:
            return True
        return self._regex is not None and self._regex.fullmatch(uri) is not None

    def __bool__(self) -> bool:
        return bool(self._exact) or self._regex is not None


def _path_glob_to_regex(pattern: str) -> str:
    # '**/' matches zero or more directories, '/**' everything below, '*' stays within a segment.
    p = pattern.replace("\\", "/").lower()
    out = []
    i = 0
    while i < len(p):
        if p.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif p.startswith("/**", i) and i + 3 == len(p):
            out.append("(?:/.*)?")
            i += 3
        elif p.startswith("**", i):
            out.append(".*")
            i += 2
        elif p[i] == "*":
            out.append("[^/]*")
            i += 1
        elif p[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(p[i]))
            i += 1
    return "".join(out)


def compile_path_globs(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex matching a normalised path against any of the globs."""
    pats = [p for p in patterns if p]
    if not pats:
        return None
    return re.compile("|".join(f"(?:{_path_glob_to_regex(p)})" for p in pats) + r"\Z")


class HostMatcher:
    """Host allowlist: 'example.com' matches exactly, '*.example.com' matches any subdomain."""

    __slots__ = ("_exact", "_suffixes")

    def __init__(self, patterns: Iterable[str]) -> None:
        exact: set[str] = set()
        suffixes: set[str] = set()
        for raw in patterns:
            host = raw.strip().lower().rstrip(".")
            if host.startswith("*."):
                suffixes.add(host[1:])  # keep the dot: '.example.com'
            elif host:
                exact.add(host)
        self._exact = frozenset(exact)
        self._suffixes = tuple(sorted(suffixes))

    def __call__(self, host: str | None) -> bool:
        if not host:
            return False
        h = host.lower().rstrip(".")
        return h in self._exact or (bool(self._suffixes) and h.endswith(self._suffixes))

    def __bool__(self) -> bool:
        return bool(self._exact) or bool(self._suffixes)


class DomainMatcher:
    """Organisation domains: 'example.com' matches itself and every subdomain."""

    __slots__ = ("_exact", "_suffixes")

    def __init__(self, domains: Iterable[str]) -> None:
        cleaned = {d.strip().lower().lstrip("*.").rstrip(".") for d in domains}
        cleaned.discard("")
        self._exact = frozenset(cleaned)
        self._suffixes = tuple(sorted("." + d for d in cleaned))

    def __call__(self, domain: str) -> bool:
        d = domain.lower().rstrip(".")
        return d in self._exact or (bool(self._suffixes) and d.endswith(self._suffixes))

    def __bool__(self) -> bool:
        return bool(self._exact)
