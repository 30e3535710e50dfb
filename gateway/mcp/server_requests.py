"""Whether a request an upstream sends toward its client may reach the agent: a pure decision.

MCP servers may ask their client for things: ``sampling/createMessage`` (the agent's model),
``elicitation/create`` (the agent's user), ``roots/list`` (the agent's roots). Through the
gateway such a request reaches an agent only when

* the agent's client declared the matching capability (in ``initialize``, or in the
  stateless era's per-request envelope),
* there is a client to deliver it to (a session, or the response stream of a call), and
* one of this client's calls to that upstream is in flight, unless the operator lets that
  upstream send requests unprompted (``unsolicited_requests``): one that arrives on the
  upstream's own GET stream, outside any call, is refused by default.

Any other server-to-client request method is refused. Notifications and responses are not
decided here. The caller answers a refused request at once (:func:`refusal`), so the upstream
never waits on an agent that will not answer, and audits every decision (:func:`audit_fields`:
never the request's params).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

# The client capability each server-to-client request needs.
CAPABILITY_OF: Mapping[str, str] = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}

Reason = Literal["capability_not_declared", "unsolicited", "unknown_method", "client_unreachable"]

# Why -32600 (Invalid Request) for a refusal: it is what the official SDK clients answer when
# they lack the capability ("Sampling not supported"), so an upstream already handles it as "this
# client will not do that". -32601 (Method not found) is kept for methods no client offers.
REFUSED = -32600
METHOD_NOT_FOUND = -32601


@dataclass(frozen=True, slots=True)
class Verdict:
    """Relay the request to the client, or refuse it for ``reason``."""

    relay: bool
    reason: Reason | None = None
    capability: str | None = None  # the capability the method needs, when it is a known one

    @property
    def outcome(self) -> Literal["relayed", "refused"]:
        return "relayed" if self.relay else "refused"


# ``ping`` is between the upstream and its client, which is the gateway: it answers itself.
PING = "ping"
_METHOD_CHARS = 100  # a hostile upstream's method name is cut to this in refusals and audit records


def is_server_request(message: Mapping[str, Any]) -> bool:
    """A request (a method and an id), as opposed to a notification (no id) or a response (no method)."""
    return "method" in message and message.get("id") is not None


def declared(capabilities: Mapping[str, Any], capability: str) -> bool:
    """Whether the client declared ``capability`` (an object, possibly empty, per the spec)."""
    return isinstance(capabilities.get(capability), dict)


def decide(
    method: str, capabilities: Mapping[str, Any] | None, *, in_flight: bool, allow_unsolicited: bool
) -> Verdict:
    """May a request ``method`` from an upstream reach the client?

    ``capabilities``: what the client declared; None when there is no client to deliver it to
    (the gateway's own session with the upstream, or a call without a response stream).
    ``in_flight``: the request came during one of this client's calls to that upstream.
    ``allow_unsolicited``: the operator lets this upstream's requests reach clients outside a call.
    """
    capability = CAPABILITY_OF.get(method)
    if capability is None:
        return Verdict(False, "unknown_method")
    if capabilities is None:
        return Verdict(False, "client_unreachable", capability)
    if not declared(capabilities, capability):
        return Verdict(False, "capability_not_declared", capability)
    if not in_flight and not allow_unsolicited:
        return Verdict(False, "unsolicited", capability)
    return Verdict(True, None, capability)


def explain(method: str, verdict: Verdict) -> str:
    """The refusal, in words, for the upstream (names the reason, never the request's content)."""
    method = method[:_METHOD_CHARS]
    why = {
        "capability_not_declared": f"the client did not declare the {verdict.capability} capability",
        "unsolicited": "no call of this client to this server is in flight, and the gateway does not relay"
        " unsolicited requests from this server",
        "unknown_method": "the gateway relays only sampling/createMessage, elicitation/create and roots/list",
        "client_unreachable": "no client can receive it here (no client session, or no response stream)",
        None: "",
    }[verdict.reason]
    return f"Triplock did not relay {method}: {why}"


def refusal(request_id: Any, method: str, verdict: Verdict) -> dict[str, Any]:
    """The JSON-RPC error answering a refused request."""
    code = METHOD_NOT_FOUND if verdict.reason == "unknown_method" else REFUSED
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": code, "message": explain(method, verdict), "data": {"reason": verdict.reason}},
    }


def audit_fields(
    upstream: str, method: str, verdict: Verdict, principal: str | None, session: str | None
) -> dict[str, Any]:
    """The ``triplock.upstream.request`` event's fields (None values are left out by the audit log)."""
    return {
        "upstream": upstream,
        "method": method[:_METHOD_CHARS],
        "outcome": verdict.outcome,
        "reason": verdict.reason,
        "principal": principal,
        "session": session,
    }
