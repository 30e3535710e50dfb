"""'Did you mean' for configuration keys and names: the closest known spelling of a typo.

Shared by the policy loader and the gateway's settings, so an unknown key gets the same kind of
message everywhere: ``unknown key 'uptreams' at the top level: did you mean 'upstreams'?``.
Pure: difflib and pydantic model introspection, no I/O.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

__all__ = ["closest", "known_keys", "model_at", "section_name", "unknown_key_message"]


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``word`` (case-insensitive), or None when none is close."""
    by_lower = {c.lower(): c for c in candidates}
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[found[0]] if found else None


def _unwrap(annotation: Any, part: int | str) -> Any:
    """The type one step ``part`` into a value of ``annotation`` (a list item, a dict value, a field)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                found = _unwrap(arg, part)
                if found is not None:
                    return found
        return None
    if origin in (tuple, list, set, frozenset) and isinstance(part, int):
        return typing.get_args(annotation)[0]
    if origin is dict:
        return typing.get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(part, str):
        field = annotation.model_fields.get(part)
        return field.annotation if field is not None else None
    return None


def _model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def model_at(root: type[BaseModel], path: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the keys at ``path`` under ``root`` (None if not a model)."""
    annotation: Any = root
    for part in path:
        annotation = _unwrap(annotation, part)
        if annotation is None:
            return None
    return _model(annotation)


def known_keys(root: type[BaseModel], path: tuple[int | str, ...]) -> list[str]:
    """The keys the model at ``path`` accepts (its field names and aliases)."""
    model = model_at(root, path)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def section_name(path: tuple[int | str, ...]) -> str:
    """``('upstreams', 0)`` -> ``'upstreams[0]'``; ``('server',)`` -> ``'server'``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def unknown_key_message(root: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """What to say about the unknown key at ``loc``: where it is and the closest known key."""
    *parent, key = loc
    where = f"in [{section_name(tuple(parent))}]" if parent else "at the top level"
    message = f"unknown key {str(key)!r} {where}"
    suggestion = closest(str(key), known_keys(root, tuple(parent)))
    if suggestion is not None:
        return f"{message}: did you mean {suggestion!r}?"
    keys = known_keys(root, tuple(parent))
    return f"{message}; known keys: {', '.join(keys)}" if keys else message
