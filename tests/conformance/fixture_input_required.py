"""The conformance fixture's input-gathering tools, in both eras (SEP-2322, SEP-2575).

The 0.2 requirement set for 2026-07-28 names tools that need the client's input before they
answer (``test_input_required_result_*``, the prompt ``test_input_required_result_prompt``) and
the ``server-stateless`` diagnostics (``test_missing_capability``, ``test_streaming_elicitation``,
``test_logging_tool``). Each one here serves both eras the way a real server would:

* to a 2026-07-28 client (stateless) it answers with an ``InputRequiredResult`` under the keys
  the scenario names (``user_name``, ``capital_question``...) and finishes when the retry brings
  the ``inputResponses`` (and the echoed ``requestState``, which the SDK seals, so a tampered one
  is refused before the tool runs);
* to a session-era client (2025-11-25) it asks the same questions mid-call, as
  ``elicitation/create``, ``sampling/createMessage`` and ``roots/list`` requests on the call's
  stream, one at a time, as that era does.

So Triplock in front of this fixture is tested twice: speaking 2025-11-25 to it (Triplock turns
the mid-call requests into input-required results for 2026-07-28 clients) and speaking
2026-07-28 to it (Triplock passes the results through).
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequest,
    InputRequiredResult,
    ListRootsRequest,
    ListRootsResult,
    SamplingMessage,
    TextContent,
)
from mcp_types.version import is_version_at_least

STATELESS = "2026-07-28"
# requestState values (the SDK seals them; the tool sees them back only if they came back intact).
STATE_CONFIRM = "confirm-round-1"
STATE_MULTI = "multiple-round-1"
STATE_ROUND_1 = "multi-round-1"
STATE_TAMPER = "tamper-round-1"

Answer = str | InputRequiredResult


def stateless(ctx: Context) -> bool:
    """True when this request speaks 2026-07-28 (input goes in the result, not mid-call)."""
    version = ctx.protocol_version
    return version is not None and is_version_at_least(version, STATELESS)


def form(message: str, field: str, kind: str = "string") -> ElicitRequest:
    """A one-field form elicitation."""
    schema = {"type": "object", "properties": {field: {"type": kind}}, "required": [field]}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def sampling(text: str, max_tokens: int) -> CreateMessageRequest:
    """A one-message sampling request."""
    message = SamplingMessage(role="user", content=TextContent(type="text", text=text))
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens))


ASK_NAME = form("What is your name?", "name")
ASK_CAPITAL = sampling("What is the capital of France?", 100)
ASK_GREETING = sampling("Generate a greeting", 50)
ASK_ROOTS = ListRootsRequest()
ASK_CONFIRM = form("Please confirm", "ok", "boolean")
ASK_STEP_1 = form("Step 1: What is your name?", "name")
ASK_STEP_2 = form("Step 2: What is your favorite color?", "color")
ASK_CONTEXT = form("What context should the prompt use?", "context")


def answered(ctx: Context, key: str, kind: type[Any]) -> Any:
    """The client's response under ``key`` if it is a ``kind`` (anything else counts as unanswered)."""
    value = (ctx.input_responses or {}).get(key)
    return value if isinstance(value, kind) else None


def field_of(result: ElicitResult | None, field: str) -> str:
    return str((result.content or {}).get(field, "")) if result is not None and result.action == "accept" else ""


def text_of(result: CreateMessageResult | None) -> str:
    return result.content.text if result is not None and isinstance(result.content, TextContent) else ""


def need(**requests: InputRequest) -> dict[str, InputRequest]:
    return dict(requests)


async def ask(ctx: Context, request: InputRequest) -> Any:
    """Session era: send ``request`` to the client on this call's stream and wait for its answer."""
    related = ServerMessageMetadata(related_request_id=ctx.request_id)
    if isinstance(request, ElicitRequest):
        assert isinstance(request.params, ElicitRequestFormParams)
        return await ctx.session.elicit_form(
            request.params.message, request.params.requested_schema, related_request_id=ctx.request_id
        )
    if isinstance(request, CreateMessageRequest):
        return await ctx.session.send_request(request, CreateMessageResult, metadata=related)
    return await ctx.session.send_request(request, ListRootsResult, metadata=related)


def missing_capability(name: str) -> MCPError:
    """-32021 with ``requiredCapabilities`` as a ClientCapabilities object (``{"sampling": {}}``)."""
    return MCPError(
        MISSING_REQUIRED_CLIENT_CAPABILITY,
        f"Client did not declare the {name} capability this tool requires",
        {"requiredCapabilities": {name: {}}},
    )


def declared(ctx: Context, name: str) -> bool:
    caps = ctx.client_capabilities
    return caps is not None and getattr(caps, name, None) is not None


def add_input_required_tools(server: MCPServer) -> None:
    """Register the SEP-2322 tools and prompt and the SEP-2575 diagnostics on ``server``."""

    @server.tool(description="Asks the user's name (elicitation), then greets them")
    async def test_input_required_result_elicitation(ctx: Context) -> Answer:
        if not stateless(ctx):
            return f"Hello, {field_of(await ask(ctx, ASK_NAME), 'name')}!"
        name = answered(ctx, "user_name", ElicitResult)
        if name is None:  # not answered, or answered with something that is not an ElicitResult: ask again
            return InputRequiredResult(input_requests=need(user_name=ASK_NAME))
        return f"Hello, {field_of(name, 'name')}!"

    @server.tool(description="Asks the client's LLM a question (sampling), then reports the answer")
    async def test_input_required_result_sampling(ctx: Context) -> Answer:
        if not stateless(ctx):
            return f"Sampling result: {text_of(await ask(ctx, ASK_CAPITAL))}"
        sampled = answered(ctx, "capital_question", CreateMessageResult)
        if sampled is None:
            return InputRequiredResult(input_requests=need(capital_question=ASK_CAPITAL))
        return f"Sampling result: {text_of(sampled)}"

    @server.tool(description="Asks the client for its roots, then lists them")
    async def test_input_required_result_list_roots(ctx: Context) -> Answer:
        roots = await ask(ctx, ASK_ROOTS) if not stateless(ctx) else answered(ctx, "client_roots", ListRootsResult)
        if roots is None:
            return InputRequiredResult(input_requests=need(client_roots=ASK_ROOTS))
        return "Client roots: " + ", ".join(str(root.uri) for root in roots.roots)

    @server.tool(description="Asks for a confirmation and checks its requestState came back")
    async def test_input_required_result_request_state(ctx: Context) -> Answer:
        if not stateless(ctx):
            await ask(ctx, ASK_CONFIRM)
            return "state-ok: confirmed"
        if answered(ctx, "confirm", ElicitResult) is None:
            return InputRequiredResult(input_requests=need(confirm=ASK_CONFIRM), request_state=STATE_CONFIRM)
        if ctx.request_state != STATE_CONFIRM:
            raise ToolError("requestState did not come back as it was sent")
        return "state-ok: requestState round-tripped"

    @server.tool(description="Asks for a name, a sampled greeting and the roots")
    async def test_input_required_result_multiple_inputs(ctx: Context) -> Answer:
        if not stateless(ctx):
            name, greeting = await ask(ctx, ASK_NAME), await ask(ctx, ASK_GREETING)
            roots = await ask(ctx, ASK_ROOTS)
            return f"{text_of(greeting)} {field_of(name, 'name')} ({len(roots.roots)} roots)"
        asked = need(user_name=ASK_NAME, greeting=ASK_GREETING, client_roots=ASK_ROOTS)
        kinds = {"user_name": ElicitResult, "greeting": CreateMessageResult, "client_roots": ListRootsResult}
        missing = {key: request for key, request in asked.items() if answered(ctx, key, kinds[key]) is None}
        if missing:
            return InputRequiredResult(input_requests=missing, request_state=STATE_MULTI)
        name, greeting = answered(ctx, "user_name", ElicitResult), answered(ctx, "greeting", CreateMessageResult)
        return f"{text_of(greeting)} {field_of(name, 'name')}"

    @server.tool(description="Asks two questions, one round after the other")
    async def test_input_required_result_multi_round(ctx: Context) -> Answer:
        if not stateless(ctx):
            name = field_of(await ask(ctx, ASK_STEP_1), "name")
            return f"{name} likes {field_of(await ask(ctx, ASK_STEP_2), 'color')}"
        color = answered(ctx, "step2", ElicitResult)
        if color is not None and (ctx.request_state or "").startswith("multi-round-2:"):
            return f"{ctx.request_state.split(':', 1)[1]} likes {field_of(color, 'color')}"  # type: ignore[union-attr]
        name = answered(ctx, "step1", ElicitResult)
        if name is not None and ctx.request_state == STATE_ROUND_1:
            state = f"multi-round-2:{field_of(name, 'name')}"
            return InputRequiredResult(input_requests=need(step2=ASK_STEP_2), request_state=state)
        return InputRequiredResult(input_requests=need(step1=ASK_STEP_1), request_state=STATE_ROUND_1)

    @server.tool(description="Asks for a confirmation; its requestState is sealed, so a tampered one is refused")
    async def test_input_required_result_tampered_state(ctx: Context) -> Answer:
        if not stateless(ctx):
            await ask(ctx, ASK_CONFIRM)
            return "confirmed"
        if answered(ctx, "confirm", ElicitResult) is None or ctx.request_state != STATE_TAMPER:
            return InputRequiredResult(input_requests=need(confirm=ASK_CONFIRM), request_state=STATE_TAMPER)
        return "confirmed with intact state"

    @server.tool(description="Asks only for what the client declared it can answer")
    async def test_input_required_result_capabilities(ctx: Context) -> Answer:
        offered: dict[str, tuple[str, InputRequest]] = {
            "sampling": ("capital_question", ASK_CAPITAL),
            "elicitation": ("user_name", ASK_NAME),
            "roots": ("client_roots", ASK_ROOTS),
        }
        if not stateless(ctx):
            got = []
            for capability, (key, request) in offered.items():
                if declared(ctx, capability):
                    try:
                        await ask(ctx, request)
                    except MCPError:  # refused on the way (a gateway that knows its client lacks it)
                        continue
                    got.append(key)
            return f"Collected {len(got)} responses: {', '.join(got)}"
        if ctx.input_responses:
            return f"Collected {len(ctx.input_responses)} responses"
        requests = {key: request for capability, (key, request) in offered.items() if declared(ctx, capability)}
        if not requests:
            return "The client declared no capability to answer with"
        return InputRequiredResult(input_requests=requests)

    @server.prompt(description="A prompt that asks the user for its context first")
    async def test_input_required_result_prompt(ctx: Context) -> list[UserMessage] | InputRequiredResult:
        if not stateless(ctx):
            context = field_of(await ask(ctx, ASK_CONTEXT), "context")
        elif (answer := answered(ctx, "user_context", ElicitResult)) is None:
            return InputRequiredResult(input_requests=need(user_context=ASK_CONTEXT))
        else:
            context = field_of(answer, "context")
        return [UserMessage(f"Answer with this context in mind: {context}")]

    # --- server-stateless (SEP-2575) diagnostics -------------------------------------------------

    @server.tool(description="Needs the client's sampling capability: -32021 without it")
    async def test_missing_capability(ctx: Context) -> Answer:
        if not declared(ctx, "sampling"):
            raise missing_capability("sampling")
        if not stateless(ctx):
            try:
                return f"Sampling result: {text_of(await ask(ctx, ASK_CAPITAL))}"
            except MCPError as exc:  # refused on the way: the client does not have it after all
                raise missing_capability("sampling") from exc
        sampled = answered(ctx, "capital_question", CreateMessageResult)
        if sampled is None:
            return InputRequiredResult(input_requests=need(capital_question=ASK_CAPITAL))
        return f"Sampling result: {text_of(sampled)}"

    @server.tool(description="Needs an answer from the user while it works (elicitation)")
    async def test_streaming_elicitation(ctx: Context) -> Answer:
        if not declared(ctx, "elicitation"):
            raise missing_capability("elicitation")
        if not stateless(ctx):
            return f"Hello, {field_of(await ask(ctx, ASK_NAME), 'name')}!"
        name = answered(ctx, "user_name", ElicitResult)
        if name is None:
            return InputRequiredResult(input_requests=need(user_name=ASK_NAME))
        return f"Hello, {field_of(name, 'name')}!"

    @server.tool(description="Logs three info messages while it runs (sent only to clients that asked for logs)")
    async def test_logging_tool(ctx: Context) -> str:
        for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
            await ctx.log("info", message)
        return "Tool with logging executed successfully"
