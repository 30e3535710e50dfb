"""A lean MCP upstream for benchmarks: raw ASGI, JSON replies, an echo tool and a sized payload tool.

It is deliberately minimal so the benchmark measures the gateway, not the upstream.
Run: ``python -m load_tests.lean_upstream PORT [--tools N]``.
"""

from __future__ import annotations

import secrets
import sys
from typing import Any

import orjson

_JSON_HEADERS = [(b"content-type", b"application/json")]


def make_app(n_tools: int = 1) -> Any:
    tools = [{"name": "echo", "description": "Echo the arguments back.", "inputSchema": {"type": "object"},
              "annotations": {"readOnlyHint": True, "openWorldHint": False}},
             {"name": "blob", "description": "Return a text of the given size.",
              "inputSchema": {"type": "object", "properties": {"size": {"type": "integer"}}},
              "annotations": {"readOnlyHint": True, "openWorldHint": False}}]
    tools += [{"name": f"tool_{i:04d}", "description": f"Synthetic tool {i}.", "inputSchema": {"type": "object"},
               "annotations": {"readOnlyHint": True}} for i in range(max(0, n_tools - 2))]

    def result_for(msg: dict[str, Any]) -> dict[str, Any] | None:
        method = msg.get("method")
        params = msg.get("params") or {}
        if method == "initialize":
            return {"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                    "capabilities": {"tools": {}}, "serverInfo": {"name": "lean", "version": "1"}}
        if method == "tools/list":
            return {"tools": tools}
        if method == "tools/call":
            if params.get("name") == "blob":
                size = int((params.get("arguments") or {}).get("size", 1024))
                return {"content": [{"type": "text", "text": "x" * size}]}
            return {"content": [{"type": "text", "text": "ok"}], "structuredContent": params.get("arguments") or {}}
        if method == "ping":
            return {}
        return None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 405, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b""
        more = True
        while more:
            m = await receive()
            body += m.get("body", b"")
            more = m.get("more_body", False)
        msg = orjson.loads(body)
        if "id" not in msg:
            await send({"type": "http.response.start", "status": 202, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        result = result_for(msg)
        reply = ({"jsonrpc": "2.0", "id": msg["id"], "result": result} if result is not None else
                 {"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32601, "message": "Method not found"}})
        headers = list(_JSON_HEADERS)
        if msg.get("method") == "initialize":
            headers.append((b"mcp-session-id", secrets.token_hex(8).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps(reply)})

    return app


def main() -> None:
    import uvicorn

    port = int(sys.argv[1])
    n_tools = int(sys.argv[sys.argv.index("--tools") + 1]) if "--tools" in sys.argv else 2
    uvicorn.run(make_app(n_tools), host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
