"""Upstream sign-in: where pending sign-ins and upstreams' OAuth grants live, and the sign-in interface.

An upstream whose authorization server offers only the authorization code grant is connected once
by an admin in a browser (:mod:`gateway.identity.upstream_signin_api` hosts the flow; the OAuth
work is in ``adapters/upstreams/oauth_signin.py``). What that leaves behind must survive restarts
and be usable by every replica, so it lives in the store, behind :class:`GrantStore`:

* a *pending sign-in* per ``state`` (single use: :meth:`GrantStore.take_signin` removes it
  atomically, so a replayed callback finds nothing), expiring in minutes;
* a *grant* per upstream (tokens, the client registered at its authorization server), versioned:
  :meth:`GrantStore.save_grant` with ``expect_version`` is a compare-and-set, so two replicas that
  refreshed at once cannot overwrite each other's rotated refresh token;
* a *refresh claim* per upstream (:meth:`GrantStore.claim_refresh`), so one replica refreshes
  while the others wait and re-read the store (an authorization server that detects refresh
  token reuse would revoke the whole grant if two replicas spent the same one).

Grants hold live tokens: they are stored as the store keeps everything else (see docs/security.md),
never logged, never audited, never shown (status shows scopes and expiry only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

SIGNIN_TTL = 600.0  # seconds a pending sign-in (its state) may wait for the browser's callback


@dataclass(frozen=True, slots=True)
class StoredGrant:
    """An upstream's grant as stored: the record and its version (for compare-and-set)."""

    record: dict[str, Any]
    version: int


@runtime_checkable
class GrantStore(Protocol):
    """Pending sign-ins, grants and refresh claims; every adapter of `gateway.ports.store.Store` has them."""

    async def save_signin(self, state: str, record: dict[str, Any], ttl_seconds: float) -> None:
        """Keep a pending sign-in under its ``state`` for ``ttl_seconds``."""
        ...

    async def take_signin(self, state: str) -> dict[str, Any] | None:
        """Remove and return the pending sign-in of ``state``, atomically (None: unknown, expired or used)."""
        ...

    async def load_grant(self, upstream: str) -> StoredGrant | None:
        """The upstream's grant, or None when nobody signed in (or it was dropped)."""
        ...

    async def save_grant(self, upstream: str, record: dict[str, Any],
                         expect_version: int | None = None) -> StoredGrant | None:
        """Write the grant; with ``expect_version``, only if the stored version is still that one.

        Returns the stored grant with its new version, or None when the compare-and-set lost
        (another process wrote first: re-read it). ``expect_version=None`` writes unconditionally
        (a new sign-in replaces whatever was there).
        """
        ...

    async def drop_grant(self, upstream: str) -> None:
        """Forget the upstream's grant (its refresh token was refused: sign in again). Its version is kept
        and moves on, so a writer still holding the dropped grant's version loses its compare-and-set."""
        ...

    async def claim_refresh(self, upstream: str, holder: str, ttl_seconds: float) -> bool:
        """Claim the right to refresh the grant for ``ttl_seconds``: True for exactly one holder at a time
        (an expired claim can be taken over; the same holder may renew its own)."""
        ...

    async def release_refresh(self, upstream: str, holder: str) -> None:
        """Give up a claim ``holder`` holds (no error when it holds none)."""
        ...


class SignInError(Exception):
    """A sign-in step failed; the message names the step and is safe to show (no token, no secret)."""


@dataclass(frozen=True, slots=True)
class SignInStarted:
    """Where to send the admin's browser, and until when the sign-in can be finished."""

    upstream: str
    url: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class SignInDone:
    """A finished sign-in: who connected which upstream, with which scopes (never the tokens)."""

    upstream: str
    by: str
    scopes: tuple[str, ...]
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class GrantStatus:
    """What an admin may see of an upstream's grant: connected or not, scopes, expiry; never a token."""

    upstream: str
    connected: bool
    detail: str
    scopes: tuple[str, ...] = ()
    expires_at: float | None = None
    refreshable: bool = False
    issuer: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class UpstreamSignIn(Protocol):
    """The sign-in of one upstream that uses the authorization code grant (an adapter implements it)."""

    upstream: str

    async def begin(self, by: str, redirect_uri: str) -> SignInStarted:
        """Discover, register, keep a pending sign-in, and return the authorization URL. Raises SignInError."""
        ...

    async def finish(self, pending: dict[str, Any], params: dict[str, str]) -> SignInDone:
        """Check the authorization response (``params``: code, state, iss, error) against ``pending``,
        exchange the code and store the grant. Raises SignInError."""
        ...

    async def status(self) -> GrantStatus:
        """The grant as the store holds it now."""
        ...

    async def aclose(self) -> None:
        """Release its HTTP client."""
        ...
