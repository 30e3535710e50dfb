"""How the guard says no (or not yet): a tool error for ``tools/call``, a JSON-RPC error otherwise.

A tool's refusal is a result with ``isError`` so that the model reads it and can tell its
user; ``resources/read``, ``prompts/get`` and ``completion/complete`` have no error
result of their own, so they are refused with a JSON-RPC error carrying the same text
and metadata.
"""

from __future__ import annotations

from typing import Any

from gateway.mcp.jsonrpc import ProtocolError

POLICY_DENIED = -32010
"""JSON-RPC error code: the request was denied by policy (server-defined range)."""
HELD_FOR_APPROVAL = -32011
"""JSON-RPC error code: the request waits for a human's approval; repeat it once approved."""


def tool_error(text: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``tools/call`` result that reports failure to the model (``isError``)."""
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": True}
    if meta:
        result["_meta"] = meta
    return result


def refuse(method: str, answer: dict[str, Any], code: int = POLICY_DENIED) -> dict[str, Any]:
    """``answer`` (a tool error) as the answer to ``method``: returned for tools, raised otherwise."""
    if method == "tools/call":
        return answer
    content = answer.get("content") or [{}]
    text = str(content[0].get("text", "refused"))
    raise ProtocolError(code, text, answer.get("_meta"))
