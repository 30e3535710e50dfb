"""What the gateway needs from an upstream MCP server, whatever carries it.

``adapters/`` implements these for streamable HTTP and stdio. The gateway only
talks to upstreams through :class:`UpstreamSession` and :class:`UpstreamConnector`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

MessageHandler = Callable[[dict[str, Any]], Awaitable[None]]
"""Receives a message the upstream sent toward its client (a notification or a request)."""

# The protocol revision the gateway speaks to upstreams: the handshake era every SDK serves.
UPSTREAM_PROTOCOL_VERSION = "2025-11-25"
# An upstream session's `era`: the handshake era (initialize, a session; any of its revisions) or the
# stateless 2026-07-28 wire, where every request carries its own envelope.
HANDSHAKE_ERA = UPSTREAM_PROTOCOL_VERSION
MODERN_ERA = "2026-07-28"


class UpstreamError(Exception):
    """An upstream could not answer. ``kind`` tells the caller what to say and whether to retry."""

    def __init__(
        self,
        upstream: str,
        kind: Literal["unreachable", "timeout", "protocol", "closed", "session_expired"],
        detail: str,
    ) -> None:
        super().__init__(f"upstream {upstream!r} {kind}: {detail}")
        self.upstream = upstream
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class ClientIdentity:
    """What the gateway tells an upstream about the client it opens a session for."""

    client_info: dict[str, Any] = field(default_factory=lambda: {"name": "triplock", "version": "0.1.0"})
    capabilities: dict[str, Any] = field(default_factory=dict)
    principal: str | None = None  # passed on in the upstream's identity_header, when one is configured


class UpstreamSession(Protocol):
    """One MCP session with one upstream server."""

    upstream: str
    initialize_result: dict[str, Any]
    era: str
    """:data:`HANDSHAKE_ERA` or :data:`MODERN_ERA`: which wire this session speaks, so the gateway knows
    what a request needs (the stateless era's envelope: client capabilities in ``params._meta``)."""

    @property
    def closed(self) -> bool: ...

    async def request(
        self,
        message: dict[str, Any],
        *,
        on_message: MessageHandler | None,
        timeout: float,
        principal: str | None = None,
    ) -> dict[str, Any]:
        """Send a JSON-RPC request and return the upstream's response message.

        The response carries the same ``id`` as ``message``. Messages the upstream
        sends while the request is open (progress, logging, sampling requests) go to
        ``on_message``. ``principal`` names the caller of this one request on a session
        shared by many (HTTP upstreams put it in their ``identity_header``, if configured).
        Raises :class:`UpstreamError`.
        """
        ...

    async def notify(self, message: dict[str, Any]) -> None:
        """Send a notification (fire and forget; failures are logged, not raised)."""
        ...

    async def send_response(self, message: dict[str, Any]) -> None:
        """Answer a request the upstream sent us (sampling, elicitation, roots)."""
        ...

    async def aclose(self) -> None: ...


class UpstreamConnector(Protocol):
    """Opens sessions with one configured upstream."""

    name: str

    async def open_session(self, identity: ClientIdentity, on_server_message: MessageHandler) -> UpstreamSession:
        """Initialize a new session; messages sent outside any request go to ``on_server_message``."""
        ...

    async def aclose(self) -> None: ...
