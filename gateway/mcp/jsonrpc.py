"""JSON-RPC 2.0 framing for MCP: decode one message, classify it, encode replies.

Decoding is the first thing untrusted bytes meet, so every failure becomes a
:class:`ProtocolError` carrying the JSON-RPC code and a specific message; nothing
here raises anything else for bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from mcp_types.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)

__all__ = [
    "INTERNAL_ERROR",
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "Message",
    "ProtocolError",
    "decode_message",
    "encode",
    "error_response",
    "result_response",
]

RequestId = str | int
Kind = Literal["request", "notification", "response"]


class ProtocolError(Exception):
    """A JSON-RPC error to send back: ``code`` and ``message`` per the spec, optional ``data``."""

    def __init__(self, code: int, message: str, data: Any = None, *, request_id: RequestId | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.request_id = request_id

    def to_message(self) -> dict[str, Any]:
        """The JSON-RPC error response object (``id`` null when the request's id is unknown)."""
        return error_response(self.request_id, self.code, self.message, self.data)


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded JSON-RPC message; ``raw`` is the dict as received (forwarded untouched)."""

    kind: Kind
    raw: dict[str, Any]

    @property
    def id(self) -> RequestId | None:
        return self.raw.get("id")

    @property
    def method(self) -> str:
        return self.raw.get("method", "")

    @property
    def params(self) -> dict[str, Any]:
        return self.raw.get("params") or {}


def _too_deep(value: Any, limit: int) -> bool:
    # Iterative walk: a recursive one would itself fall over on hostile input.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return False


def _valid_id(value: Any) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def decode_message(body: bytes, *, max_depth: int) -> Message:
    """Decode ``body`` as exactly one JSON-RPC 2.0 message, or raise :class:`ProtocolError`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "utf-8" in reason.lower() or "surrogate" in reason.lower():
            raise ProtocolError(PARSE_ERROR, "Parse error: body is not valid UTF-8") from None
        if "recursion" in reason.lower():
            raise ProtocolError(PARSE_ERROR, f"Parse error: JSON nested deeper than {max_depth}") from None
        raise ProtocolError(PARSE_ERROR, f"Parse error: {reason}") from None
    # Counting brackets is C-speed; the exact walk only runs for bodies that could be too deep.
    if body.count(b"[") + body.count(b"{") > max_depth and _too_deep(data, max_depth):
        raise ProtocolError(PARSE_ERROR, f"Parse error: JSON nested deeper than {max_depth}")
    if isinstance(data, list):
        raise ProtocolError(INVALID_REQUEST, "Invalid Request: JSON-RPC batches are not supported")
    if not isinstance(data, dict):
        raise ProtocolError(INVALID_REQUEST, "Invalid Request: expected a JSON-RPC object")
    rid = data.get("id")
    if data.get("jsonrpc") != "2.0":
        raise ProtocolError(
            INVALID_REQUEST,
            "Invalid Request: 'jsonrpc' must be \"2.0\"",
            request_id=rid if _valid_id(rid) else None,
        )
    if "method" in data:
        method = data["method"]
        if not isinstance(method, str) or not method:
            raise ProtocolError(
                INVALID_REQUEST,
                "Invalid Request: 'method' must be a non-empty string",
                request_id=rid if _valid_id(rid) else None,
            )
        params = data.get("params")
        if params is not None and not isinstance(params, dict):
            raise ProtocolError(
                INVALID_PARAMS if _valid_id(rid) else INVALID_REQUEST,
                "Invalid params: 'params' must be an object",
                request_id=rid if _valid_id(rid) else None,
            )
        if "id" not in data:
            return Message("notification", data)
        if not _valid_id(rid):
            raise ProtocolError(INVALID_REQUEST, "Invalid Request: 'id' must be a string or an integer")
        return Message("request", data)
    if "id" in data and ("result" in data) != ("error" in data):
        if not _valid_id(rid):
            raise ProtocolError(INVALID_REQUEST, "Invalid Request: response 'id' must be a string or an integer")
        return Message("response", data)
    raise ProtocolError(
        INVALID_REQUEST,
        "Invalid Request: not a JSON-RPC request, notification or response",
        request_id=rid if _valid_id(rid) else None,
    )


def result_response(request_id: RequestId | None, result: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC success response."""
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_response(request_id: RequestId | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    """A JSON-RPC error response; ``id`` stays on the wire as null when unknown."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def encode(message: dict[str, Any]) -> bytes:
    """Serialise a message for the wire."""
    return orjson.dumps(message)
