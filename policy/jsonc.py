"""JSONC: JSON with // and /* */ comments and trailing commas, as the seed's config packs use.

A small tokenizer walks the text once, copying string literals verbatim (so '//' inside
"https://..." survives), dropping comments, and dropping a comma that only precedes a closing
bracket. Newlines inside comments are kept so that json's error line numbers still match.
"""

from __future__ import annotations

import json
from typing import Any


class JsoncError(ValueError):
    """Malformed JSONC (unterminated string or comment, or invalid JSON after stripping)."""


def strip_comments(text: str) -> str:
    """Return `text` as plain JSON: comments and trailing commas removed, strings untouched."""
    out: list[str] = []
    i, n = 0, len(text)
    pending_comma = -1  # index in `out` of a comma that may turn out to be trailing
    last = ""  # last significant character copied, to leave '{,' and ',,' for json to reject
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise JsoncError(f"unterminated string starting at line {text.count(chr(10), 0, i) + 1}")
            out.append(text[i : j + 1])
            pending_comma, last = -1, '"'
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j == -1 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j == -1:
                raise JsoncError(f"unterminated comment starting at line {text.count(chr(10), 0, i) + 1}")
            out.append("\n" * text.count("\n", i, j))
            i = j + 2
        elif c in "}]":
            if pending_comma >= 0:
                out[pending_comma] = ""
            pending_comma, last = -1, c
            out.append(c)
            i += 1
        elif c == ",":
            pending_comma = len(out) if last not in ("{", "[", ",", "") else -1
            last = c
            out.append(c)
            i += 1
        else:
            if not c.isspace():
                pending_comma, last = -1, c
            out.append(c)
            i += 1
    return "".join(out)


def loads(text: str) -> Any:
    """Parse JSONC text."""
    try:
        return json.loads(strip_comments(text))
    except json.JSONDecodeError as exc:
        raise JsoncError(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
