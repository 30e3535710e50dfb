"""Downstream sessions: one per agent connection (handshake era), expired when idle.

A session ends only when its client DELETEs it or it idles out; a graceful shutdown keeps its
record in the store, so it continues on the next process (see :meth:`SessionRegistry.aclose`).

A session owns its upstream sessions (opened lazily, one per upstream) and the
queue of server-initiated messages waiting for its GET stream. Requests an
upstream sends toward the client are screened first (:func:`screen_request`: only
those the client declared a capability for, during one of its calls unless the
operator allows otherwise; a refused one is answered at once) and given gateway
ids, so the client's answer can be routed back to the upstream session that asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.mcp.server_requests import PING, audit_fields, decide, is_server_request, refusal
from gateway.ports.store import Store, StoreUnavailable
from gateway.ports.upstream import UpstreamSession

log = logging.getLogger("triplock.sessions")

Emit = Callable[[dict[str, Any]], Awaitable[None]]
OnServerRequest = Callable[..., object]
"""Told of each request an upstream sent toward a client, with ``server_requests.audit_fields`` as keywords."""
_relay_ids = itertools.count(1)
OUTBOX_LIMIT = 1000


async def screen_request(
    upstream: UpstreamSession,
    msg: dict[str, Any],
    *,
    capabilities: dict[str, Any] | None,
    in_flight: bool,
    allow_unsolicited: bool,
    principal: str | None,
    session: str | None,
    report: OnServerRequest | None,
) -> bool:
    """Whether a message ``upstream`` sent toward a client may pass on (see ``server_requests.decide``).

    Notifications and responses pass. A request is decided and reported (relayed or refused); a
    refused one is answered now with a JSON-RPC error, so the upstream does not wait for an answer
    that will never come. ``ping`` is answered by the gateway, the upstream's client, and not relayed.
    """
    if not is_server_request(msg):
        return True
    method = str(msg["method"])
    if method == PING:
        await upstream.send_response({"jsonrpc": "2.0", "id": msg["id"], "result": {}})
        return False
    verdict = decide(method, capabilities, in_flight=in_flight, allow_unsolicited=allow_unsolicited)
    if report is not None:
        try:
            report(**audit_fields(upstream.upstream, method, verdict, principal, session))
        except Exception:  # auditing must not break the relay (the audit log reports its own failures)
            log.exception("could not report a request from upstream %s", upstream.upstream)
    if not verdict.relay:
        log.info("upstream %s: %.100s refused (%s)", upstream.upstream, method, verdict.reason)
        await upstream.send_response(refusal(msg["id"], method, verdict))
    return verdict.relay


@dataclass(eq=False)
class DownstreamSession:
    """State of one agent's MCP session with the gateway."""

    id: str
    protocol_version: str
    client_info: dict[str, Any]
    capabilities: dict[str, Any]
    principal: str
    last_seen: float = field(default_factory=time.monotonic)
    upstreams: dict[str, UpstreamSession] = field(default_factory=dict)
    opening: dict[str, asyncio.Future[UpstreamSession]] = field(default_factory=dict)
    outbox: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(OUTBOX_LIMIT))
    get_stream_open: bool = False
    relayed: dict[str, tuple[UpstreamSession, Any]] = field(default_factory=dict)
    in_flight: dict[Any, asyncio.Task[Any]] = field(default_factory=dict)
    # Requests that reused an id already in flight (clients must not; served, and cancelled together).
    in_flight_more: dict[Any, list[asyncio.Task[Any]]] = field(default_factory=dict)
    calls_to: dict[str, int] = field(default_factory=dict)  # forwarded calls in flight, per upstream
    asked: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    initialized: bool = False
    closed: bool = False
    persisted_at: float = 0.0

    def record(self) -> dict[str, Any]:
        """What survives a gateway restart: enough to serve the session again."""
        return {
            "principal": self.principal,
            "protocol_version": self.protocol_version,
            "client_info": self.client_info,
            "capabilities": self.capabilities,
        }

    async def relay(
        self,
        upstream: UpstreamSession,
        msg: dict[str, Any],
        emit: Emit | None = None,
        *,
        allow_unsolicited: bool = False,
        report: OnServerRequest | None = None,
    ) -> None:
        """Pass a message from ``upstream`` to the client, on ``emit`` or else the GET stream.

        ``emit`` is the response stream of this client's call in flight to ``upstream``; without
        it the message came on the upstream's GET stream. A request from there is in flight when
        one of this client's calls to that upstream is (SDK servers send ``roots/list`` that way
        during a call); otherwise it is unsolicited, relayed only if ``allow_unsolicited`` (see
        :func:`screen_request`).
        """
        if is_server_request(msg):
            reachable = not self.closed and (emit is not None or not self.outbox.full())
            if not await screen_request(
                upstream,
                msg,
                capabilities=self.capabilities if reachable else None,
                in_flight=emit is not None or self.calls_to.get(upstream.upstream, 0) > 0,
                allow_unsolicited=allow_unsolicited,
                principal=self.principal,
                session=self.id,
                report=report,
            ):
                return
            gateway_id = f"tl-{next(_relay_ids)}"
            self.relayed[gateway_id] = (upstream, msg["id"])
            msg = {**msg, "id": gateway_id}
        if emit is not None:
            await emit(msg)
            return
        try:
            self.outbox.put_nowait(msg)
        except asyncio.QueueFull:
            log.warning("session %s: GET-stream queue full; dropped %s", self.id[:8], msg.get("method"))

    async def ask(self, method: str, params: dict[str, Any], emit: Emit, timeout: float) -> dict[str, Any] | None:
        """Send the client a request of the gateway's own (e.g. elicitation) and wait for its answer.

        Returns the response message, or None when the client did not answer in time.
        """
        gateway_id = f"tl-ask-{next(_relay_ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.asked[gateway_id] = future
        try:
            await emit({"jsonrpc": "2.0", "id": gateway_id, "method": method, "params": params})
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return None
        finally:
            self.asked.pop(gateway_id, None)

    def answer(self, message: dict[str, Any]) -> bool:
        """Deliver the client's response to a request sent with :meth:`ask`; False if none matches."""
        future = self.asked.get(message.get("id"))  # type: ignore[arg-type]
        if future is None or future.done():
            return False
        future.set_result(message)
        return True

    def take_relayed(self, gateway_id: Any) -> tuple[UpstreamSession, Any] | None:
        """The upstream session and original id for a client's answer to a relayed request."""
        if not isinstance(gateway_id, str):
            return None
        return self.relayed.pop(gateway_id, None)

    def forget_reused(self, rid: Any, task: asyncio.Task[Any]) -> None:
        """A request that reused an in-flight id has ended."""
        tasks = self.in_flight_more.get(rid)
        if tasks is not None and task in tasks:
            tasks.remove(task)
            if not tasks:
                del self.in_flight_more[rid]

    async def aclose(self) -> None:
        """Close every upstream session this session opened."""
        self.closed = True
        for task in [*self.in_flight.values(), *(t for ts in self.in_flight_more.values() for t in ts)]:
            task.cancel()
        sessions, self.upstreams = list(self.upstreams.values()), {}
        for up in sessions:
            with contextlib.suppress(Exception):
                await up.aclose()


class SessionLimitExceeded(Exception):
    """The principal holds as many live sessions as ``limits.sessions_per_principal`` allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"Too many sessions: this principal already holds {limit} live sessions (limit sessions_per_principal,"
            " limits.sessions_per_principal); end one with DELETE or let one idle out, then initialize again"
        )
        self.limit = limit


class SessionRegistry:
    """All live downstream sessions, with idle expiry (clients rarely send DELETE)."""

    def __init__(
        self,
        idle_seconds: float,
        *,
        owns_upstream_sessions: Callable[[str], bool],
        store: Store | None = None,
        max_per_principal: int = 0,
        on_closed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.on_closed = on_closed  # what else ends with a session (its legs: GuardedPath.forget_session)
        # What else lets go of an ended session at once (DELETE or idle expiry, not a shutdown): its
        # resource subscriptions toward 2026-07-28 upstreams (ResourceBridge.forget_session).
        self.on_ended: Callable[[DownstreamSession], None] | None = None
        self.max_per_principal = max_per_principal  # live sessions one principal may open here; 0: no cap
        self._by_principal: dict[str, list[str]] = {}  # ids it opened here, pruned of ended ones at create
        self._sessions: dict[str, DownstreamSession] = {}
        self._store = store  # session records outlive a restart (and are shared through Redis)
        self._idle = idle_seconds
        self._sweeper: asyncio.Task[None] | None = None
        # Shared upstream sessions (stdio) must not be closed with one downstream session.
        self._owns = owns_upstream_sessions

    def __len__(self) -> int:
        return len(self._sessions)

    async def create(
        self, protocol_version: str, client_info: dict[str, Any], capabilities: dict[str, Any], principal: str
    ) -> DownstreamSession:
        """A new session with an unguessable id (128 bits), saved so it survives a restart.

        Raises :class:`SessionLimitExceeded` when ``principal`` already holds ``max_per_principal``
        live sessions opened in this process (ended and expired ones no longer count).
        """
        if self.max_per_principal:
            live = [sid for sid in self._by_principal.get(principal, ()) if sid in self._sessions]
            if len(live) >= self.max_per_principal:
                self._by_principal[principal] = live
                raise SessionLimitExceeded(self.max_per_principal)
        session = DownstreamSession(
            id=secrets.token_hex(16),
            protocol_version=protocol_version,
            client_info=client_info,
            capabilities=capabilities,
            principal=principal,
        )
        self._sessions[session.id] = session
        if self.max_per_principal:
            live.append(session.id)
            self._by_principal[principal] = live
        await self._persist(session)
        return session

    async def get(self, session_id: str, principal: str) -> DownstreamSession | None:
        """The live session, only for the principal that opened it (anyone else: unknown).

        A session this process does not hold (it restarted, or another worker opened it) is
        restored from the store.
        """
        session = self._sessions.get(session_id)
        if session is None:
            session = await self._restore(session_id)
        if session is None or session.principal != principal:
            return None
        session.last_seen = time.monotonic()
        if self._store is not None and session.last_seen - session.persisted_at > self._idle / 4:
            session.persisted_at = session.last_seen  # refresh the stored expiry now and then, not per call
            asyncio.get_running_loop().create_task(self._persist(session))
        return session

    async def _persist(self, session: DownstreamSession) -> None:
        if self._store is None:
            return
        try:
            await self._store.save_session(session.id, session.record(), self._idle)
            session.persisted_at = time.monotonic()
        except StoreUnavailable as exc:
            log.warning("session %s not saved (%s): it will not survive a restart", session.id[:8], exc)

    async def _restore(self, session_id: str) -> DownstreamSession | None:
        if self._store is None or len(session_id) != 32:
            return None
        try:
            rec = await self._store.load_session(session_id)
        except StoreUnavailable:
            return None
        if rec is None or session_id in self._sessions:
            return self._sessions.get(session_id)
        session = DownstreamSession(
            id=session_id,
            protocol_version=str(rec.get("protocol_version")),
            client_info=dict(rec.get("client_info") or {}),
            capabilities=dict(rec.get("capabilities") or {}),
            principal=str(rec.get("principal")),
            initialized=True,
            persisted_at=time.monotonic(),
        )
        self._sessions[session_id] = session
        log.info("session %s restored from the store", session_id[:8])
        return session

    def all(self) -> list[DownstreamSession]:
        return list(self._sessions.values())

    async def close(self, session_id: str) -> bool:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        await self._close(session)
        if self.on_ended is not None:
            self.on_ended(session)
        if self._store is not None:
            try:
                await self._store.drop_session(session_id)
            except StoreUnavailable as exc:
                log.warning("session %s not dropped from the store: %s", session_id[:8], exc)
        if self.on_closed is not None:
            await self.on_closed(session_id)
        return True

    async def _close(self, session: DownstreamSession) -> None:
        session.upstreams = {k: v for k, v in session.upstreams.items() if self._owns(k)}
        await session.aclose()

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="session-sweeper")

    async def aclose(self) -> None:
        """Graceful shutdown: let go of every session here, but keep their records and their legs.

        Only the client's DELETE (:meth:`close`) or idle expiry ends a session. After a restart or a
        rolling deploy, the client goes on with the same ``Mcp-Session-Id`` on the new process (or
        another replica on the same store): :meth:`get` restores it, and what the guard remembers
        of it (its legs) was never forgotten. The upstream sessions it had are closed here and
        reopened there on first use.
        """
        if self._sweeper:
            self._sweeper.cancel()
        sessions, self._sessions, self._by_principal = list(self._sessions.values()), {}, {}
        for session in sessions:
            await self._close(session)

    async def expire_idle(self, now: float | None = None) -> int:
        """Close sessions idle longer than the limit; returns how many."""
        now = time.monotonic() if now is None else now
        stale = [s for s in self._sessions.values()
                 if now - s.last_seen > self._idle and not s.in_flight and not s.in_flight_more]
        for s in stale:
            self._sessions.pop(s.id, None)
            log.info("session %s expired after %.0fs idle", s.id[:8], now - s.last_seen)
            await self._close(s)
            if self.on_ended is not None:
                self.on_ended(s)
        return len(stale)

    async def _sweep(self) -> None:
        interval = min(60.0, max(1.0, self._idle / 4))
        while True:
            await asyncio.sleep(interval)
            await self.expire_idle()
