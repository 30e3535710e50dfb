"""Who is calling: the types every authenticator returns and the transport consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: an agent, possibly acting for a user, in groups that map to roles."""

    id: str  # stable: sessions, approvals and legs are bound to it
    agent: str | None = None
    user: str | None = None
    groups: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    via: str = "none"  # none | api_key | jwt


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """An HTTP answer to send instead of serving the request (401/403 with WWW-Authenticate)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] = field(default_factory=dict)


class Authenticator(Protocol):
    """Turns request headers into a :class:`Principal`, or the failure to answer with."""

    async def authenticate(self, headers: dict[str, str]) -> Principal | AuthFailure: ...


LOCAL_DEV = Principal(id="local-dev", agent="local-dev", groups=frozenset({"local"}),
                      roles=frozenset({"agents-run", "approver", "agents-admin", "auditor"}), via="none")


class NoAuth:
    """auth.mode = "none": local development on a loopback bind only (config validation enforces it)."""

    async def authenticate(self, headers: dict[str, str]) -> Principal | AuthFailure:
        return LOCAL_DEV
