"""The recorded upstreams: one process serving every suite's tools over streamable HTTP on loopback,
each suite at ``/SUITE/mcp``, answering each call with the recorded output of the session being
replayed.

The harness tells it which session is replayed through a small control API on the same port:

- ``POST /control/session`` with the session's steps (``{"id", "steps": [{"upstream", "tool",
  "arguments", "output"}]}``) makes it the current one and clears the execution log;
- ``GET /control/executed`` lists the calls that reached the tools since then (step index, name).

A call is matched to the first step of the current session with the same tool and arguments that
has not run yet; a call that matches none is answered with an error (and logged as ``step: null``),
so a replay that drifts from the corpus is seen, never hidden. Sessions are replayed one after
another, so one current session is enough.

Run: ``python -m load_tests.agent_corpus.upstream --port PORT`` (binds 127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.lowlevel.server import Server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from load_tests.agent_corpus.model import ToolDef
from load_tests.agent_corpus.suites import SUITES


def canonical(arguments: Any) -> str:
    """Arguments as canonical JSON, to compare a call with a recorded step."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"))


@dataclass
class Replay:
    """The session being replayed and what has run of it."""

    session_id: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    done: set[int] = field(default_factory=set)
    executed: list[dict[str, Any]] = field(default_factory=list)

    def start(self, session_id: str, steps: list[dict[str, Any]]) -> None:
        """Make ``steps`` the current session's, with nothing run yet."""
        self.session_id, self.steps, self.done, self.executed = session_id, steps, set(), []

    def run(self, upstream: str, tool: str, arguments: dict[str, Any]) -> tuple[str, bool]:
        """The recorded output for this call (and False), or an error text (and True) if none matches."""
        key = canonical(arguments)
        for i, step in enumerate(self.steps):
            if i not in self.done and step["upstream"] == upstream and step["tool"] == tool \
                    and canonical(step["arguments"]) == key:
                self.done.add(i)
                self.executed.append({"step": i, "upstream": upstream, "tool": tool})
                out = step["output"]
                return (out if isinstance(out, str) else json.dumps(out, indent=1)), False
        self.executed.append({"step": None, "upstream": upstream, "tool": tool})
        return f"no recorded output for {upstream}.{tool} in session {self.session_id!r}", True


def _tool(t: ToolDef) -> types.Tool:
    a = t.annotations()
    return types.Tool(
        name=t.name, title=t.title, description=t.description, input_schema=t.input_schema(),
        annotations=types.ToolAnnotations(title=a["title"], read_only_hint=a["readOnlyHint"],
                                          destructive_hint=a["destructiveHint"], idempotent_hint=a["idempotentHint"],
                                          open_world_hint=a["openWorldHint"]))


def suite_server(name: str, tools: tuple[ToolDef, ...], replay: Replay) -> Server[Any]:
    """A low-level MCP server publishing ``tools`` and answering from ``replay``."""
    listed = types.ListToolsResult(tools=[_tool(t) for t in tools])
    known = {t.name for t in tools}

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return listed

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name not in known:
            return types.CallToolResult(content=[types.TextContent(type="text", text=f"Unknown tool {params.name}")],
                                        is_error=True)
        text, failed = replay.run(name, params.name, dict(params.arguments or {}))
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=failed)

    return Server(f"corpus-{name}", version="1.0", on_list_tools=list_tools, on_call_tool=call_tool)


def build_app() -> Starlette:
    """Every suite at ``/SUITE/mcp`` plus the control API, in one app."""
    replay = Replay()
    routes: list[BaseRoute] = []
    managers = []
    for name, tools in SUITES.items():
        sub = suite_server(name, tools, replay).streamable_http_app(streamable_http_path=f"/{name}/mcp",
                                                                    json_response=True)
        routes.extend(sub.routes)
        managers.append(sub)

    async def set_session(request: Request) -> JSONResponse:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("steps"), list):
            return JSONResponse({"error": "body must be {\"id\": ..., \"steps\": [...]}"}, status_code=400)
        replay.start(str(body.get("id", "")), body["steps"])
        return JSONResponse({"session": replay.session_id, "steps": len(replay.steps)})

    async def executed(request: Request) -> JSONResponse:
        return JSONResponse({"session": replay.session_id, "executed": replay.executed})

    routes += [Route("/control/session", set_session, methods=["POST"]),
               Route("/control/executed", executed, methods=["GET"])]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for sub in managers:  # each suite's session manager runs for the app's lifetime
                await stack.enter_async_context(sub.router.lifespan_context(sub))
            yield

    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: list[str] | None = None) -> int:
    """Serve on 127.0.0.1 until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m load_tests.agent_corpus.upstream")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
