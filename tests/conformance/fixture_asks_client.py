"""The conformance fixture's tools that ask the client mid-call: sampling and form elicitation.

The 0.1.16 scenarios `tools-call-sampling`, `tools-call-elicitation`, `elicitation-sep1034-defaults`
and `elicitation-sep1330-enums` call these. To a session client (2025-11-25) they send
`sampling/createMessage` or `elicitation/create` on the call's stream and wait; to a 2026-07-28
request they answer with an InputRequiredResult and finish on the retry, so Triplock speaking
2026-07-28 to the fixture must ask its session clients these questions itself.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import (
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequiredResult,
    SamplingMessage,
    TextContent,
)

from tests.conformance.fixture_input_required import answered, sampling, stateless, text_of


def add_asking_tools(server: MCPServer) -> None:
    """Register `test_sampling`, `test_elicitation` and the SEP-1034/1330 elicitation tools on ``server``."""

    @server.tool(description="Asks the client's LLM to answer `prompt` (sampling/createMessage)")
    async def test_sampling(prompt: str, ctx: Context) -> str | InputRequiredResult:
        caps = ctx.client_capabilities
        if caps is None or caps.sampling is None:
            raise ToolError("the client does not support sampling")
        if stateless(ctx):  # 2026-07-28: the question goes out in the result, the retry brings the answer
            sampled = answered(ctx, "llm_answer", CreateMessageResult)
            if sampled is None:
                return InputRequiredResult(input_requests={"llm_answer": sampling(prompt, 100)})
            return f"LLM response: {text_of(sampled)}"
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        text = result.content.text if isinstance(result.content, TextContent) else str(result.content)
        return f"LLM response: {text}"

    @server.tool(description="Asks the user for a username and email (elicitation/create)")
    async def test_elicitation(message: str, ctx: Context) -> str | InputRequiredResult:
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        result = await _elicit(ctx, message, schema)
        if isinstance(result, InputRequiredResult):
            return result
        return f"User response: action={result.action}, content={result.content}"

    @server.tool(description="Elicitation whose schema has defaults for every primitive type (SEP-1034)")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str | InputRequiredResult:
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "Name", "default": "John Doe"},
                "age": {"type": "integer", "description": "Age", "default": 30},
                "score": {"type": "number", "description": "Score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "Status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "description": "Verified", "default": True},
            },
        }
        result = await _elicit(ctx, "Please review and update the form fields with defaults", schema)
        if isinstance(result, InputRequiredResult):
            return result
        return f"Elicitation completed: action={result.action}, content={result.content}"

    @server.tool(description="Elicitation with all five enum schema variants (SEP-1330)")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str | InputRequiredResult:
        options = ["option1", "option2", "option3"]
        schema = {
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "description": "Untitled single-select", "enum": options},
                "titledSingle": {
                    "type": "string",
                    "description": "Titled single-select",
                    "oneOf": [
                        {"const": "value1", "title": "First Option"},
                        {"const": "value2", "title": "Second Option"},
                        {"const": "value3", "title": "Third Option"},
                    ],
                },
                "legacyEnum": {
                    "type": "string",
                    "description": "Legacy titled enum",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "description": "Untitled multi-select",
                    "items": {"type": "string", "enum": options},
                },
                "titledMulti": {
                    "type": "array",
                    "description": "Titled multi-select",
                    "items": {
                        "anyOf": [
                            {"const": "value1", "title": "First Choice"},
                            {"const": "value2", "title": "Second Choice"},
                            {"const": "value3", "title": "Third Choice"},
                        ]
                    },
                },
            },
        }
        result = await _elicit(ctx, "Please select from the enum options", schema)
        if isinstance(result, InputRequiredResult):
            return result
        return f"Elicitation completed: action={result.action}, content={result.content}"


async def _elicit(ctx: Context, message: str, schema: dict[str, Any]) -> Any:
    """Send a form elicitation with a raw JSON schema (the SEP-1034/1330 scenarios check keywords
    such as `default`, `oneOf` and `enumNames` that `ctx.elicit`'s pydantic models cannot express).

    To a 2026-07-28 request: the answer its retry brought, or the InputRequiredResult asking for it.
    """
    caps = ctx.client_capabilities
    if caps is None or caps.elicitation is None:
        raise ToolError("the client does not support elicitation")
    if stateless(ctx):
        request = ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))
        return answered(ctx, "form", ElicitResult) or InputRequiredResult(input_requests={"form": request})
    return await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)

