"""What one guarded request reaches: an upstream's tool, resource or prompt, resolved by the router.

The router knows the catalog (which upstream owns which exposed name or URI); the guard
knows nothing of catalogs. A :class:`Target` is the hand-off between them, built once
per request.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

TargetKind = Literal["tool", "resource", "prompt"]

GUARDED_METHODS: dict[str, TargetKind] = {
    "tools/call": "tool",
    "resources/read": "resource",
    "resources/subscribe": "resource",
    "resources/unsubscribe": "resource",
    "prompts/get": "prompt",
    # completion/complete resolves to the prompt or resource its ``ref`` names
}
"""Client-to-upstream methods and the kind of object each reaches (besides completion/complete)."""

LEARNS_FROM_RESULT = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
"""Methods whose result carries upstream content, so the session learns legs from it.

(Un)subscribing returns nothing but an acknowledgement: the updates it brings are read,
and guarded, with ``resources/read``.
"""


class Target(NamedTuple):
    """One upstream object a request reaches. Immutable; a NamedTuple because it is built per call."""

    kind: TargetKind
    upstream: str
    name: str  # the upstream's own name: tool name, resource URI, prompt name
    exposed: str  # what the client asked for: the namespaced tool or prompt, or the URI
    definition: dict[str, Any] | None  # the tool or prompt as the upstream listed it; None for a resource
    method: str  # the MCP method: tools/call, resources/read, prompts/get, completion/complete, ...

    def upstream_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` as the upstream must see them: its own name for the object, not the exposed one."""
        if self.method == "completion/complete":
            ref = params.get("ref")
            if isinstance(ref, dict) and self.kind == "prompt":
                return {**params, "ref": {**ref, "name": self.name}}
            return params
        if self.kind == "resource":
            return params
        return {**params, "name": self.name}
