"""A deliberately broken MCP upstream, for testing how the gateway copes.

Over HTTP (``--http PORT``) or stdio. Its tools misbehave on call:
``crash`` (the process dies mid-call), ``garbage`` (the answer is not JSON-RPC),
``hang`` (never answers), ``wrong_id`` (answers another request id), ``ok``.
Oversized answers (argument ``bytes``): ``huge`` (a result that big: HTTP chunked, or with
its length declared when ``declared``; stdio one line), ``huge_id_last`` (stdio: the id after
the result), ``sse_long_line`` (HTTP: an SSE data line that never ends, until the client
hangs up), ``sse_big_event`` (HTTP: an event of many short data lines). ``stats`` tells the
process id and what the last SSE misbehaviour saw. Resource ``rogue://huge`` (over HTTP
``rogue-http://huge``) reads as ``HUGE_RESOURCE`` bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

TOOLS = [
    {"name": n, "description": f"misbehaves: {n}", "inputSchema": {"type": "object"}}
    for n in ("crash", "garbage", "hang", "wrong_id", "ok", "grow", "headers", "huge", "huge_id_last",
              "sse_long_line", "sse_big_event", "stats")
]
SEEN_HEADERS: list[dict[str, str]] = []  # HTTP mode: every request's headers, for the "headers" tool
STATS: dict[str, Any] = {"sse_sent": 0, "sse_client_gone": False}  # HTTP mode: the last sse_* call
HUGE_RESOURCE = 200_000
RESOURCE = {"uri": "rogue://huge"}  # one URI per mode, so a gateway in front of both knows which serves it
SSE_CAP = 64 * 1024 * 1024  # an "endless" line still ends here, so a gateway that never stops cannot hang a test


def _text(rid: Any, text: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}]}}


def answer(msg: dict[str, Any]) -> dict[str, Any] | str | list[dict[str, Any]] | None:
    """The reply to one message; a str is sent raw (garbage); None sends nothing."""
    method, rid = msg.get("method"), msg.get("id")
    if rid is None:
        return None
    if method == "initialize":
        return {"jsonrpc": "2.0", "id": rid, "result": {
            "protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}, "resources": {}},
            "serverInfo": {"name": "rogue", "version": "0"}}}
    if method == "tools/list":
        return {"jsonrpc": "2.0", "id": rid, "result": {"tools": TOOLS}}
    if method == "resources/list":
        return {"jsonrpc": "2.0", "id": rid, "result": {"resources": [{**RESOURCE, "name": "huge"}]}}
    if method == "resources/templates/list":
        return {"jsonrpc": "2.0", "id": rid, "result": {"resourceTemplates": []}}
    if method == "resources/read":
        text = "r" * HUGE_RESOURCE
        return {"jsonrpc": "2.0", "id": rid, "result": {"contents": [{**RESOURCE, "text": text}]}}
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
        size = int((msg["params"].get("arguments") or {}).get("bytes", 0))
        if name == "huge":
            return _text(rid, "x" * size)
        if name == "huge_id_last":
            return json.dumps({"result": _text(rid, "x" * size)["result"], "jsonrpc": "2.0", "id": rid})
        if name == "stats":
            return {"jsonrpc": "2.0", "id": rid, "result": {"content": [], "structuredContent": {
                "pid": os.getpid(), **STATS}}}
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
    msg = json.loads(body)
    params = msg.get("params") or {}
    if msg.get("method") == "tools/call" and str(params.get("name")).startswith("sse_"):
        await _sse_misbehaviour(msg, receive, send)
        return
    reply = answer(msg)
    if reply is None and msg.get("id") is not None:
        await receive()  # hang: wait for the client to go away
        return
    payload = b"" if reply is None else (reply if isinstance(reply, str) else json.dumps(reply)).encode()
    headers = [(b"content-type", b"application/json")]
    args = params.get("arguments") or {}
    if params.get("name") == "huge" and args.get("declared"):
        headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": 202 if reply is None else 200, "headers": headers})
    if params.get("name") == "huge" and not args.get("declared"):  # no length: chunked, 64 KiB at a time
        for at in range(0, len(payload), 65536):
            await send({"type": "http.response.body", "body": payload[at:at + 65536], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.body", "body": payload})


async def _sse_misbehaviour(msg: dict[str, Any], receive: Any, send: Any) -> None:
    """``sse_long_line``: one data line that never ends; ``sse_big_event``: short lines, never a blank one."""
    STATS.update(sse_sent=0, sse_client_gone=False)
    gone = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.create_task(watch())
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    head = b"event: message\ndata: "
    piece = b"y" * 65536 if msg["params"]["name"] == "sse_long_line" else (b"data: " + b"z" * 1000 + b"\n") * 64
    await send({"type": "http.response.body", "body": head, "more_body": True})
    while not gone.is_set() and STATS["sse_sent"] < SSE_CAP:
        await send({"type": "http.response.body", "body": piece, "more_body": True})
        STATS["sse_sent"] += len(piece)
        await asyncio.sleep(0)  # let the disconnect be noticed
    STATS["sse_client_gone"] = gone.is_set()
    watcher.cancel()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        import uvicorn

        RESOURCE["uri"] = "rogue-http://huge"
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    else:
        run_stdio()
