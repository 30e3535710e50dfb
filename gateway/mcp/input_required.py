"""Input-required results (SEP-2322, 2026-07-28) in front of upstreams that ask mid-call.

A session-era upstream asks its client for input while it works on a call: it sends
``elicitation/create``, ``sampling/createMessage`` or ``roots/list`` and waits. A 2026-07-28
client takes no such requests; it expects an ``InputRequiredResult`` (``resultType:
"input_required"``, ``inputRequests``, ``requestState``) and retries the original request with
``inputResponses`` and the echoed ``requestState``.

So the gateway keeps the upstream call running in the background (one :class:`InputExchange`
per original request), answers the client's POST with the requests the upstream has made so
far, and on the retry hands each response to the upstream request it answers, then waits again
for the final result or the next request. The ``requestState`` is a random token naming the
exchange on this gateway (nothing in it can be forged into meaning): it is single use (every
round issues a new one), bound to the principal and to the original request (method and a
digest of its params), and expires when no retry comes within :data:`IDLE_SECONDS`, which
cancels the upstream call. A token that fails any of these checks is refused with -32602.

A 2026-07-28 upstream answers ``input_required`` itself (:func:`drive_upstream_input`). To a
2026-07-28 client its ``inputRequests`` go out with their keys intact, inside the same
exchange: the client sees only the gateway's ``requestState`` (the upstream's stays in the
waiting call, which retries the upstream with it and the client's ``inputResponses``). A
session-era client is asked the same questions as server-to-client requests (elicitation,
sampling, roots: screened as any upstream request is) on its call's stream; where that cannot
be done the call ends with an error that says what the upstream needs.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.mcp.jsonrpc import INVALID_PARAMS, ProtocolError
from gateway.ports.upstream import UpstreamSession

# How long an exchange waits for the client's retry before its upstream call is cancelled, and
# how long a finished call's result is kept for a retry that comes late.
IDLE_SECONDS = 120.0
# Exchanges one principal may have waiting at once: a client that never retries cannot grow this.
MAX_OPEN_PER_PRINCIPAL = 32
# The methods whose results may be input-required (the spec's list).
INTERACTIVE_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
_NOT_HASHED = frozenset({"_meta", "inputResponses", "requestState"})
# 2026-07-28 log delivery is a per-request opt-in: a request whose _meta names no level gets no
# notifications/message (SEP-2575), whatever a session-era upstream sends during the call.
LOG_LEVEL_META_KEY = "io.modelcontextprotocol/logLevel"
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def requested_log_level(params: dict[str, Any]) -> int | None:
    """The rank in :data:`LOG_LEVELS` of the level a request's ``_meta`` asks logs at, or None (no logs)."""
    meta = params.get("_meta")
    level = meta.get(LOG_LEVEL_META_KEY) if isinstance(meta, dict) else None
    return LOG_LEVELS.index(level) if level in LOG_LEVELS else None


def wanted(message: dict[str, Any], log_level: int | None) -> bool:
    """Whether a notification goes to a client that asked for logs at ``log_level`` (None: none)."""
    if message.get("method") != "notifications/message":
        return True
    params = message.get("params")
    level = params.get("level") if isinstance(params, dict) else None
    return log_level is not None and level in LOG_LEVELS and LOG_LEVELS.index(level) >= log_level


Emit = Callable[[dict[str, Any]], Awaitable[None]]

CURRENT: contextvars.ContextVar[InputExchange | None] = contextvars.ContextVar("triplock_input_exchange", default=None)


def request_digest(method: str, params: dict[str, Any]) -> str:
    """What identifies the original request across retries: its method and salient params."""
    salient = {k: v for k, v in params.items() if k not in _NOT_HASHED}
    return hashlib.sha256(method.encode() + b"\0" + orjson.dumps(salient, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)
class _Ask:
    upstream: UpstreamSession | None  # None: a 2026-07-28 upstream's own input request (answered by retry)
    request_id: Any  # the upstream's id for its request
    method: str
    params: dict[str, Any]


class InputExchange:
    """One original request, its upstream call running in the background, and what it asks for."""

    def __init__(self, principal: str, digest: str) -> None:
        self.principal = principal
        self.digest = digest
        self.asks: dict[str, _Ask] = {}
        self.task: asyncio.Task[dict[str, Any]] | None = None
        self.emit: Emit | None = None  # the current round's response stream (progress...), if any
        self.context: Any = None  # the RequestContext the call runs under; its client is the current round's POST
        self._changed = asyncio.Event()
        self._count = 0
        self._timer: asyncio.TimerHandle | None = None
        self._passed: asyncio.Future[dict[str, Any]] | None = None  # a 2026-07-28 upstream waiting for answers
        self.log_level: int | None = None  # what the current round's request asked logs at (None: no logs)

    async def ask(self, upstream: UpstreamSession, message: dict[str, Any]) -> None:
        """An upstream request (already screened) for the client: it goes out in the next result."""
        self._count += 1
        params = message.get("params")
        self.asks[f"input_{self._count}"] = _Ask(
            upstream, message.get("id"), str(message.get("method")), params if isinstance(params, dict) else {}
        )
        self._changed.set()

    async def relay(self, message: dict[str, Any]) -> None:
        """A notification during the call (progress, log): to the current round's stream, if any.

        A log message goes only to a round whose request asked for logs at its level or below.
        """
        if self.emit is not None and wanted(message, self.log_level):
            await self.emit(message)

    async def answer(self, responses: Any) -> None:
        """Hand each of the client's ``inputResponses`` to the upstream request it answers.

        Keys the exchange did not ask for are ignored (the spec's SHOULD); a key asked for and not
        answered stays asked, so the next result asks again.
        """
        if not isinstance(responses, dict):
            return
        passed: dict[str, Any] = {}
        for key, value in responses.items():
            ask = self.asks.get(key) if isinstance(key, str) else None
            if ask is None or not isinstance(value, dict):
                continue
            del self.asks[key]
            if ask.upstream is None:
                passed[key] = value
            else:
                await ask.upstream.send_response({"jsonrpc": "2.0", "id": ask.request_id, "result": value})
        if passed and self._passed is not None and not self._passed.done():
            for key in [k for k, a in self.asks.items() if a.upstream is None]:
                del self.asks[key]  # the upstream asks again, in its next answer, for what it still needs
            self._passed.set_result(passed)

    async def pass_through(self, input_requests: dict[str, Any]) -> dict[str, Any]:
        """A 2026-07-28 upstream's ``inputRequests``, keys intact, to the client; returns its ``inputResponses``."""
        for key, request in input_requests.items():
            if isinstance(request, dict):
                params = request.get("params")
                params = params if isinstance(params, dict) else {}
                self.asks[key] = _Ask(None, None, str(request.get("method")), params)
        self._passed = asyncio.get_running_loop().create_future()
        self._changed.set()
        try:
            return await self._passed
        finally:
            self._passed = None

    def input_requests(self) -> dict[str, Any]:
        """What the next ``input_required`` result asks, by key."""
        return {key: {"method": a.method, "params": a.params} for key, a in self.asks.items()}

    async def outcome(self) -> dict[str, Any] | None:
        """The call's final JSON-RPC message, or None when the client's input is needed first."""
        assert self.task is not None
        while True:
            if self.asks:
                return None
            if self.task.done():
                return self.task.result()
            self._changed.clear()
            waiter = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({self.task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    def cancel(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


class InputExchanges:
    """The exchanges waiting for a client's retry, by their current ``requestState`` token."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS, per_principal: int = MAX_OPEN_PER_PRINCIPAL) -> None:
        self.idle_seconds = idle_seconds
        self.per_principal = per_principal
        self._waiting: dict[str, InputExchange] = {}

    def open(self, principal: str, method: str, params: dict[str, Any]) -> InputExchange:
        """A new exchange for an original request (refused when the principal has too many waiting)."""
        if sum(1 for e in self._waiting.values() if e.principal == principal) >= self.per_principal:
            raise ProtocolError(
                INVALID_PARAMS,
                f"Too many requests waiting for input: {self.per_principal} are open for this principal;"
                " answer or abandon them first",
            )
        exchange = InputExchange(principal, request_digest(method, params))
        exchange.log_level = requested_log_level(params)
        return exchange

    def park(self, exchange: InputExchange) -> str:
        """Keep ``exchange`` for the client's retry; returns the new single-use ``requestState``."""
        token = secrets.token_urlsafe(24)
        self._waiting[token] = exchange
        exchange._timer = asyncio.get_running_loop().call_later(self.idle_seconds, self._expire, token)
        return token

    def resume(self, token: Any, principal: str, method: str, params: dict[str, Any]) -> InputExchange:
        """The exchange a retry continues; -32602 for a token that is unknown, expired or not this request's."""
        exchange = self._waiting.get(token) if isinstance(token, str) else None
        if exchange is None or exchange.principal != principal or exchange.digest != request_digest(method, params):
            raise ProtocolError(
                INVALID_PARAMS,
                "Invalid params: requestState is unknown, expired, already used, or not for this request",
            )
        del self._waiting[token]
        exchange.log_level = requested_log_level(params)  # each round's request says what it wants
        if exchange._timer is not None:
            exchange._timer.cancel()
        return exchange

    def _expire(self, token: str) -> None:
        exchange = self._waiting.pop(token, None)
        if exchange is not None:
            exchange.cancel()  # nobody came back: the upstream call (and its question) is abandoned

    def __len__(self) -> int:
        return len(self._waiting)


# -- input-required results from 2026-07-28 upstreams ------------------------------------------
MAX_UPSTREAM_ROUNDS = 16  # input rounds one call may take with an upstream: one that never finishes ends
AskClient = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""Sends a session-era client one request (screened) and returns its response, or None if refused or unanswered."""


def asked_of(reply: dict[str, Any]) -> dict[str, Any] | None:
    """The ``input_required`` result in an upstream's response message, or None (O(1): on every forward)."""
    result = reply.get("result")
    if type(result) is dict and result.get("resultType") == "input_required":
        return result
    return None


def retry_message(message: dict[str, Any], asked: dict[str, Any], responses: dict[str, Any]) -> dict[str, Any]:
    """The original request again, with the client's ``inputResponses`` and the upstream's own ``requestState``."""
    params = {k: v for k, v in (message.get("params") or {}).items() if k not in ("inputResponses", "requestState")}
    params["inputResponses"] = responses
    if "requestState" in asked:
        params["requestState"] = asked["requestState"]
    return {**message, "params": params}


def what_is_needed(asked: dict[str, Any]) -> str:
    """The methods an ``input_required`` result asks for, for a message (never their params: upstream text)."""
    requests = asked.get("inputRequests")
    methods = sorted({str(r.get("method")) for r in requests.values() if isinstance(r, dict)}) if isinstance(
        requests, dict) else []
    return ", ".join(methods) or "nothing it named"


async def answers_for(
    asked: dict[str, Any], exchange: InputExchange | None, ask_client: AskClient | None
) -> dict[str, Any] | str:
    """The client's ``inputResponses`` for an upstream's ``inputRequests``, or why there are none.

    A 2026-07-28 client (``exchange``) gets the requests with their keys; a session-era client
    (``ask_client``) is asked each one as a server-to-client request, in turn.
    """
    requests = asked.get("inputRequests")
    if not isinstance(requests, dict) or not requests:
        return "it answered input_required without inputRequests"
    if exchange is not None:
        return await exchange.pass_through(requests)
    if ask_client is None:
        return "this request has no stream on which the gateway could ask the client"
    responses: dict[str, Any] = {}
    for key, request in requests.items():
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return f"its input request {key!r} is not a request"
        params = request.get("params")
        reply = await ask_client(request["method"], params if isinstance(params, dict) else {})
        result = reply.get("result") if reply is not None else None
        if not isinstance(result, dict):
            why = "refused it" if reply is None else "answered it with an error"
            return f"the client {why} ({request['method']}: it may not have declared that capability)"
        responses[key] = result
    return responses


def cannot_answer(message: dict[str, Any], upstream: str, asked: dict[str, Any], why: str) -> dict[str, Any]:
    """The call's answer when the upstream's input cannot be had: a tool error for ``tools/call``, else -32603."""
    text = f"Upstream {upstream!r} needs input from the client to finish this request ({what_is_needed(asked)}): {why}"
    if message.get("method") == "tools/call":
        return {"jsonrpc": "2.0", "id": message.get("id"),
                "result": {"content": [{"type": "text", "text": text}], "isError": True}}
    return {"jsonrpc": "2.0", "id": message.get("id"), "error": {"code": -32603, "message": text}}
