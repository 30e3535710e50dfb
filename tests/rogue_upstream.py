"""A deliberately broken MCP upstream, for testing how the gateway copes.

Over HTTP (``--http PORT``) or stdio. Its tools misbehave on call:
``crash`` (the process dies mid-call), ``garbage`` (the answer is not JSON-RPC),
``hang`` (never answers), ``wrong_id`` (answers another request id), ``ok``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

TOOLS = [
    {"name": n, "description": f"misbehaves: {n}", "inputSchema": {"type": "object"}}
    for n in ("crash", "garbage", "hang", "wrong_id", "ok", "grow", "headers")
]
SEEN_HEADERS: list[dict[str, str]] = []  # HTTP mode: every request's headers, for the "headers" tool


def answer(msg: dict[str, Any]) -> dict[str, Any] | str | list[dict[str, Any]] | None:
    """The reply to one message; a str is sent raw (garbage); None sends nothing."""
    method, rid = msg.get("method"), msg.get("id")
    if rid is None:
        return None
    if method == "initialize":
        return {"jsonrpc": "2.0", "id": rid, "result": {
            "protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
            "serverInfo": {"name": "rogue", "version": "0"}}}
    if method == "tools/list":
        return {"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}}
    if method == "tools/call":
        name = msg["params"]["name"]
        if name == "crash":
            os._exit(3)
        if name == "garbage":
            return "this is not json {"
        if name == "hang":
            return None
        if name == "grow":  # a new tool appears; say so first, then answer
            TOOLS.append({"name": f"grown_{len(TOOLS)}", "description": "new", "inputSchema": {"type": "object"}})
            return [{"jsonrpc": "2.0", "method": "notifications/tools/list_changed"},
                    {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "grew"}]}}]
        if name == "headers":
            return {"jsonrpc": "2.0", "id": rid, "result": {"content": [], "structuredContent": {"seen": SEEN_HEADERS}}}
        if name == "wrong_id":
            return {"jsonrpc": "2.0", "id": "someone-else", "result": {"content": []}}
        return {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "ok"}]}}
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "Method not found"}}


def run_stdio() -> None:
    for line in sys.stdin:
        reply = answer(json.loads(line))
        for item in reply if isinstance(reply, list) else [reply]:
            if item is not None:
                sys.stdout.write((item if isinstance(item, str) else json.dumps(item)) + "\n")
                sys.stdout.flush()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 405, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    SEEN_HEADERS.append({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    reply = answer(json.loads(body))
    if reply is None and json.loads(body).get("id") is not None:
        await receive()  # hang: wait for the client to go away
        return
    payload = b"" if reply is None else (reply if isinstance(reply, str) else json.dumps(reply)).encode()
    await send({"type": "http.response.start", "status": 202 if reply is None else 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    else:
        run_stdio()
