"""A scripted OpenAI Responses-API server that plays the model for the real Codex CLI.

Codex (configured with a custom `[model_providers.X]`, `wire_api = "responses"`) POSTs each turn to
`{base_url}/responses` with `stream: true` and reads server-sent events. This server follows a
script of tool calls (:attr:`FakeModel.script`, by default one call of ``tool_suffix`` with
``arguments``), one per turn:

1. with N `function_call_output` items in the request's `input` and N < len(script): call step N,
   the tool whose model-visible name ends in its suffix (found in the request's `tools`), with its
   arguments, exactly as scripted (so a repeated step is the identical call);
2. once every step has its output: answer with one assistant message that quotes the outputs, so
   the test can find the upstream's results in Codex's final output.

Every request (method, path, headers, JSON body) is recorded in :attr:`FakeModel.requests` so the
test can assert on what Codex sent, e.g. the tool catalog the model was offered.

Wire format, from Codex itself (openai/codex, not guessed):

* SSE framing `event: <type>\\ndata: <json>\\n\\n` and the events `response.created` (with a
  `response` object), `response.output_item.done` (with an `item`) and `response.completed`
  (`response.id`, optional `usage`): the test helpers `sse`, `ev_response_created`,
  `ev_function_call`, `ev_function_call_with_namespace`, `ev_assistant_message` and
  `ev_completed` in codex-rs/core/tests/common/responses.rs, parsed by `process_sse` in
  codex-rs/codex-api/src/sse/responses.rs (a stream that ends without `response.completed` is an
  error there, so every answer ends with it).
* MCP tools are offered to the model grouped per server in a `{"type": "namespace", "name":
  "mcp__<server>", "tools": [{"type": "function", "name": "<tool>", ...}]}` entry (Codex 0.169 as
  observed; codex-rs/codex-mcp/src/mcp_tool_names.rs sanitises the parts and hashes names past 64
  bytes), and the model calls one with a `function_call` item carrying `namespace` and the bare
  `name` (`ev_function_call_with_namespace` in the test helpers above). Older Codex versions
  offered flat functions named `mcp__<server>__<tool>`; both shapes are recognised here.
* `function_call_output.output` is a string, or a list of `{type: input_text, text}` items for
  MCP results (`FunctionCallOutputPayload` in codex-rs/protocol/src/models.rs).

Run standalone for manual debugging: `python tests/codex/fake_model.py --port 18181`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JSON = dict[str, Any]

# Prefix of the final answer, so a test can tell the model's message from anything else Codex prints.
ANSWER_PREFIX = "FAKE-MODEL ANSWER: "


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One HTTP request Codex made to the fake model."""

    method: str
    path: str
    headers: dict[str, str]
    body: JSON | None


@dataclass(frozen=True, slots=True)
class ToolRef:
    """How the model addresses one tool: the namespace (newer Codex) and the name inside it."""

    namespace: str | None
    name: str

    @property
    def display(self) -> str:
        """One flat name, e.g. `mcp__triplock__demo__read_inbox`, for messages and assertions."""
        if not self.namespace:
            return self.name
        sep = "" if self.namespace.endswith("__") else "__"
        return f"{self.namespace}{sep}{self.name}"


def offered_tools(body: JSON) -> list[ToolRef]:
    """Every function the request offers the model, namespaced ones flattened out."""
    refs: list[ToolRef] = []
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        if tool.get("type") == "namespace":
            for inner in tool.get("tools") or []:
                if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                    refs.append(ToolRef(str(tool.get("name")), inner["name"]))
        elif isinstance(tool.get("name"), str):
            refs.append(ToolRef(None, tool["name"]))
    return refs


def _output_text(output: Any) -> str:
    """The text of a `function_call_output.output`: a string, or a list of content items."""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "\n".join(str(part.get("text", "")) for part in output if isinstance(part, dict))
    if isinstance(output, dict):  # the failure shape some versions send: {content, success}
        return str(output.get("content", ""))
    return ""


def function_call_outputs(body: JSON) -> dict[str, str]:
    """`call_id` -> output text of every `function_call_output` in the request's `input`."""
    found: dict[str, str] = {}
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            found[str(item.get("call_id"))] = _output_text(item.get("output"))
    return found


def sse(events: list[JSON]) -> str:
    """Frame events the way the Responses API (and Codex's own mock server) does."""
    return "".join(f"event: {ev['type']}\ndata: {json.dumps(ev)}\n\n" for ev in events)


@dataclass(frozen=True, slots=True)
class ToolStep:
    """One scripted tool call: the tool whose model-visible name ends in ``suffix``, with ``arguments``."""

    suffix: str
    arguments: JSON = field(default_factory=dict)


@dataclass
class FakeModel:
    """The scripted model; use as a context manager to serve it on 127.0.0.1 in a thread."""

    tool_suffix: str = "read_inbox"
    arguments: JSON = field(default_factory=dict)
    script: list[ToolStep] | None = None  # several calls, one per turn; None: just tool_suffix(arguments)
    port: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), repr=False)
    _server: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """What goes into `[model_providers.X] base_url`; Codex appends `/responses`."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- the script ---------------------------------------------------------------------------

    def responses_requests(self) -> list[JSON]:
        """Bodies of the `/responses` calls, in order."""
        with self._lock:
            return [r.body for r in self.requests if r.path.endswith("/responses") and r.body is not None]

    def _turn(self, body: JSON) -> list[JSON]:
        rid = f"resp_fake_{next(self._ids)}"
        created = {"type": "response.created", "response": {"id": rid}}
        completed = {
            "type": "response.completed",
            "response": {
                "id": rid,
                "usage": {
                    "input_tokens": 0,
                    "input_tokens_details": None,
                    "output_tokens": 0,
                    "output_tokens_details": None,
                    "total_tokens": 0,
                },
            },
        }
        outputs = function_call_outputs(body)
        script = self.script if self.script is not None else [ToolStep(self.tool_suffix, self.arguments)]
        if len(outputs) >= len(script):
            text = ANSWER_PREFIX + "\n".join(outputs.values())
            return [created, _message(f"msg_{rid}", text), completed]
        step = script[len(outputs)]
        tools = offered_tools(body)
        target = next((t for t in tools if t.name.endswith(step.suffix)), None)
        if target is None:
            offered = ", ".join(t.display for t in tools) or "(none)"
            text = f"{ANSWER_PREFIX}NO TOOL ending in {step.suffix!r} was offered; tools: {offered}"
            return [created, _message(f"msg_{rid}", text), completed]
        item: JSON = {
            "type": "function_call",
            "id": f"fc_{rid}",
            "call_id": f"call_{rid}",
            "name": target.name,
            "arguments": json.dumps(step.arguments),
        }
        if target.namespace is not None:
            item["namespace"] = target.namespace
        return [created, {"type": "response.output_item.done", "item": item}, completed]

    # -- HTTP ----------------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body if isinstance(body, dict) else None,
        )
        with self._lock:
            self.requests.append(record)
        if request.method == "POST" and record.path.endswith("/responses") and record.body is not None:
            return Response(sse(self._turn(record.body)), media_type="text/event-stream")
        # Anything else (a model-list refresh, say) is not part of the script: answer plainly and
        # quickly so Codex falls back to its defaults instead of retrying.
        return JSONResponse({"error": {"message": f"fake model: no route for {record.path}"}}, status_code=404)

    def app(self) -> Starlette:
        """The ASGI app: one catch-all route, so every request is recorded."""
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
        return Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, deadline: float = 10.0) -> FakeModel:
        """Serve on 127.0.0.1 in a daemon thread; returns once the socket accepts connections."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", self.port))
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(self.app(), log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        # Handing uvicorn the bound socket avoids a race for the port between choosing and binding.
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        end = time.monotonic() + deadline
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > end:
                raise RuntimeError(f"fake model did not start on port {self.port} within {deadline}s")
            time.sleep(0.01)  # polling interval; the condition is re-checked each round
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _message(item_id: str, text: str) -> JSON:
    return {
        "type": "response.output_item.done",
        "item": {
            "type": "message",
            "role": "assistant",
            "id": item_id,
            "content": [{"type": "output_text", "text": text}],
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Serve the fake model in the foreground and print every request, for manual debugging."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=18181)
    parser.add_argument("--tool-suffix", default="read_inbox")
    args = parser.parse_args(argv)
    model = FakeModel(tool_suffix=args.tool_suffix, port=args.port).start()
    print(f"fake model at {model.base_url} (Ctrl-C to stop)", flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.5)  # a debugging loop that prints new requests, not a synchronisation
            with model._lock:
                new = model.requests[seen:]
                seen = len(model.requests)
            for r in new:
                print(r.method, r.path, json.dumps(r.body)[:2000] if r.body else "", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        model.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
