"""What a tool's input schema says about its arguments, for classification: which arguments carry
a URL (the tool is a fetch), and which can carry free text (a search whose query can carry data
out of the organisation).

Read once per tool when its profile is compiled, never per call. A schema this module cannot
read counts as carrying free text (fail closed) and as carrying no URL (a URL it cannot see
makes no fetch; the free text already gives such a read its E).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policy.vocabulary import name_words

# Argument names that are URLs ('url', 'page_url', 'targetUrl', 'href').
_URL_WORDS = frozenset({"url", "urls", "uri", "uris", "href", "hrefs", "link", "links", "website", "webpage"})
_URL_FORMATS = frozenset({"uri", "url", "iri", "uri-reference", "iri-reference"})
# Argument names that are identifiers: their values name a record, they are not text to send.
_ID_WORDS = frozenset({"id", "ids", "uuid", "uuids", "guid", "guids"})
# String formats that cannot hold text of the caller's choosing.
_NARROW_FORMATS = frozenset({"date", "date-time", "time", "duration", "uuid"})
_MAX_DEPTH = 4


@dataclass(frozen=True)
class ArgumentShape:
    """The arguments of one tool, by what they can carry."""

    url_args: tuple[str, ...] = ()
    free_text_args: tuple[str, ...] = ()


def _is_url_name(name: str) -> bool:
    words = name_words(name)
    return bool(words) and (words[-1] in _URL_WORDS or "_".join(words) in _URL_WORDS)


def _is_id_name(name: str) -> bool:
    words = name_words(name)
    return bool(words) and words[-1] in _ID_WORDS


def _types(schema: Mapping[str, Any]) -> set[str] | None:
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list) and all(isinstance(k, str) for k in kind):
        return set(kind)
    return None


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _carries_text(schema: Any, depth: int = 0) -> bool:
    """True when a value of this schema can hold text of the caller's choosing."""
    if not isinstance(schema, Mapping):
        return schema is not False  # `true`, or something unreadable: anything goes
    if "enum" in schema or "const" in schema:
        return False
    if depth > _MAX_DEPTH:
        return True
    branches = [b for key in ("anyOf", "oneOf", "allOf") for b in _listed(schema.get(key))]
    if any(_carries_text(b, depth + 1) for b in branches):
        return True
    types = _types(schema)
    if types is None:
        if "properties" in schema:
            types = {"object"}
        elif "items" in schema:
            types = {"array"}
        else:
            return not branches  # untyped: anything, unless its branches said what it is
    if "string" in types and schema.get("format") not in _NARROW_FORMATS:
        return True
    if "array" in types and _carries_text(schema.get("items", True), depth + 1):
        return True
    if "object" in types:
        props = schema.get("properties")
        if isinstance(props, Mapping) and props:
            return any(not _is_id_name(str(k)) and _carries_text(v, depth + 1) for k, v in props.items())
        return schema.get("additionalProperties", True) is not False
    return False


def _is_url_schema(schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return False
    if schema.get("format") in _URL_FORMATS:
        return True
    items = schema.get("items")
    return isinstance(items, Mapping) and items.get("format") in _URL_FORMATS


def argument_shape(input_schema: Any) -> ArgumentShape:
    """Which declared arguments carry URLs and which can carry free text (see the module docstring)."""
    if not isinstance(input_schema, Mapping):
        return ArgumentShape(free_text_args=("(unreadable schema)",))
    props = input_schema.get("properties")
    if props is None:
        return ArgumentShape()
    if not isinstance(props, Mapping):
        return ArgumentShape(free_text_args=("(unreadable schema)",))
    urls: list[str] = []
    free: list[str] = []
    for raw_name, schema in props.items():
        name = str(raw_name)
        if _is_url_name(name) or _is_url_schema(schema):
            urls.append(name)
        if not _is_id_name(name) and _carries_text(schema):
            free.append(name)
    return ArgumentShape(tuple(urls), tuple(free))
