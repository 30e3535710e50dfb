"""Canonical JSON and the hashes built on it: tool definition pins and policy revisions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from policy.models import ToolDefinition


def canonical_json(value: Any, indent: int | None = None) -> str:
    """Deterministic JSON: sorted keys, no insignificant whitespace (unless `indent`), UTF-8 kept."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(value, sort_keys=True, separators=separators, ensure_ascii=False, indent=indent, default=str)


def definition_document(tool: ToolDefinition) -> dict[str, Any]:
    """The part of a tool definition a pin covers, in MCP's field names."""
    return {
        "name": tool.name,
        "description": tool.description,
        "inputSchema": dict(tool.input_schema),
        "outputSchema": dict(tool.output_schema) if tool.output_schema is not None else None,
        "annotations": dict(tool.annotations) if tool.annotations is not None else None,
    }


def definition_hash(tool: ToolDefinition) -> str:
    """'sha256:<hex>' of the canonical definition (name, description, schemas, annotations)."""
    digest = hashlib.sha256(canonical_json(definition_document(tool)).encode()).hexdigest()
    return f"sha256:{digest}"


def content_revision(document: Any) -> str:
    """A short stable revision id for a policy document."""
    return "rev-" + hashlib.sha256(canonical_json(document).encode()).hexdigest()[:16]
