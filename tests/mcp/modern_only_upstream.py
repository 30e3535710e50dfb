"""The ASGI layer test upstreams put in front of an official-SDK server that speaks only 2026-07-28.

The SDK's ``MCPServer`` (served stateless) answers both eras; a 2026-07-28-only server refuses
``initialize`` instead. ``modern_only_layer`` wraps the SDK app so that it does, and lets a test
module see what reached the upstream: it reads each POST's body once, hands the headers and the
parsed JSON to ``on_post`` (to record it, or to list a ``subscriptions/listen`` while it is open,
see ``OpenListens``), refuses ``initialize`` with -32022, replays the body to the SDK app, and
serves the test's own routes (``GET /recorded``, ``POST /touch?uri=`` ...) by path.

Used by tests/mcp/test_modern_upstream.py, test_resource_bridge.py and
test_listen_both_directions.py, each of which runs its upstream as
``python -m tests.mcp.<module> --port N`` (its ``main()`` ends in ``serve``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MODERN = "2026-07-28"

Route = Callable[[str], Awaitable[Response]]
"""A test route: gets the request's query string (``uri=test://a``) and returns the response."""

Cleanup = Callable[[], None]
OnPost = Callable[[dict[str, str], Any], Cleanup | None]
"""Sees each POST (lower-cased headers, parsed JSON body) before the upstream answers it; may return
a cleanup, run once the answer is over (for a listen: when its stream closes)."""


def modern_only_layer(inner: ASGIApp, *, routes: dict[str, Route], on_post: OnPost | None = None,
                      refuse_initialize: bool = True) -> ASGIApp:
    """Wrap the SDK app ``inner``: serve ``routes`` by path, show each POST to ``on_post``, refuse ``initialize``.

    With ``refuse_initialize`` (the default) an ``initialize`` is answered 400 with error -32022 and
    ``data.supported == ["2026-07-28"]``, as a 2026-07-28-only server answers; ``on_post`` still sees it.
    Everything else (other methods, lifespan) goes to ``inner`` unchanged.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in routes:
            response = await routes[scope["path"]](scope["query_string"].decode())
            await response(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"] != "POST":
            await inner(scope, receive, send)
            return
        body = await read_body(receive)
        parsed = json.loads(body or b"null")
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        cleanup = on_post(headers, parsed) if on_post is not None else None
        try:
            if refuse_initialize and isinstance(parsed, dict) and parsed.get("method") == "initialize":
                await refusal_of_initialize(parsed.get("id"))(scope, receive, send)
                return
            await inner(scope, replaying(body, receive), send)
        finally:
            if cleanup is not None:
                cleanup()

    return app


async def read_body(receive: Receive) -> bytes:
    """The whole body of an HTTP request, however many messages it came in."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that first gives the body already read, then whatever the client sends next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def refusal_of_initialize(request_id: Any) -> Response:
    """What a 2026-07-28-only server answers to ``initialize``: -32022, naming the one version it supports."""
    error = {"code": -32022, "message": "Unsupported protocol version",
             "data": {"supported": [MODERN], "requested": "2025-11-25"}}
    return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": error}, 400)


def serve_json(value: Any) -> Route:
    """A route answering with ``value`` as JSON as it is at the time of the request (a list the test appends to)."""

    async def route(_query: str) -> Response:
        return JSONResponse(value)

    return route


def publish_resource_update(bus: InMemorySubscriptionBus) -> Route:
    """The ``/touch?uri=`` route: publishes an update of that URI on the server's subscription bus."""

    async def route(query: str) -> Response:
        await bus.publish(ResourceUpdated(uri=query.removeprefix("uri=")))
        return Response(status_code=204)

    return route


class OpenListens:
    """The ``subscriptions/listen`` streams open at the upstream right now, each by its ``notifications`` filter."""

    def __init__(self) -> None:
        self.filters: list[dict[str, Any]] = []

    def note(self, parsed: Any) -> Cleanup | None:
        """For a listen request (for ``on_post``): list its filter until the returned cleanup runs; else None."""
        if not (isinstance(parsed, dict) and parsed.get("method") == "subscriptions/listen"):
            return None
        notifications: dict[str, Any] = parsed["params"]["notifications"]
        self.filters.append(notifications)
        return lambda: self.filters.remove(notifications)

    async def route(self, _query: str) -> Response:
        """The ``GET /listens`` route: the filters of the listens open right now, as JSON."""
        return JSONResponse(self.filters)


def serve(app: ASGIApp, port: int) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` until the process is stopped (each test module's ``main()``)."""
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
