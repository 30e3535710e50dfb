"""Authenticators: who is calling, from the request's bearer token.

* :class:`JwtAuthenticator`: Triplock as an OAuth 2.1 resource server. JWT access tokens are
  verified against the issuer's JWKS (:mod:`gateway.identity.jwks`), with the issuer, the audience (our
  canonical URL, RFC 8707), expiry/not-before with a small leeway, and an allow-list of
  asymmetric algorithms. A validated token is cached by its SHA-256 until it expires, so the
  hot path is one hash and one dict lookup.
* :class:`ApiKeyAuthenticator`: ``tlk_...`` keys from :mod:`gateway.identity.api_keys`.
* :class:`ChainAuthenticator`: one bearer token, routed to the authenticator that claims it
  (API keys by their prefix first, then JWT), with one consistent 401 challenge.

Failures follow RFC 6750 and the MCP authorization spec: 401 with
``WWW-Authenticate: Bearer resource_metadata="...", scope="..."`` (plus ``error="invalid_token"``
when a token was presented), 403 with ``error="insufficient_scope"``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import jwt

from gateway.config import Settings
from gateway.identity.api_keys import ApiKeyRecord, KeyStore, key_matches, parse_key
from gateway.identity.jwks import JwksCache, JwksUnavailable
from gateway.identity.oauth_metadata import metadata_url
from gateway.identity.principal import Authenticator, AuthFailure, NoAuth, Principal
from gateway.identity.roles import AccessPolicy

log = logging.getLogger("triplock.auth")

_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f]')
_TOKEN_CACHE_MAX = 10_000


def bearer_token(headers: dict[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header (lower-cased header names), or None.

    Exactly two whitespace-separated parts, the first ``bearer`` in any case. (``str.split``
    rather than a regex: a JWT is ~800 characters, and the regex walked them one by one,
    ~5 µs on every call.)
    """
    parts = headers.get("authorization", "").split()
    return parts[1] if len(parts) == 2 and parts[0].lower() == "bearer" else None


class Challenges:
    """Builds the 401/403/503 answers, all pointing at our protected resource metadata."""

    def __init__(self, resource: str, scopes: Sequence[str] = ()) -> None:
        self.metadata = metadata_url(resource)
        self.scope = " ".join(scopes)

    def _header(self, error: str | None = None, description: str | None = None,
                scope: str | None = None) -> tuple[tuple[str, str], ...]:
        parts = [f'resource_metadata="{self.metadata}"']
        scope = self.scope if scope is None else scope
        if scope:
            parts.append(f'scope="{scope}"')
        if error:
            parts.append(f'error="{error}"')
        if description:
            # Quoted-string values must not carry quotes, backslashes or control characters.
            parts.append(f'error_description="{_UNSAFE.sub("", description)[:200]}"')
        return (("www-authenticate", "Bearer " + ", ".join(parts)),)

    def missing(self) -> AuthFailure:
        """No credentials at all: RFC 6750 says no error code, just the challenge."""
        return AuthFailure(401, self._header(), {"error": "unauthorized",
                                                 "error_description": "Bearer token required"})

    def invalid(self, description: str) -> AuthFailure:
        return AuthFailure(401, self._header("invalid_token", description),
                           {"error": "invalid_token", "error_description": description})

    def insufficient_scope(self, required: Iterable[str]) -> AuthFailure:
        scope = " ".join(required)
        description = f"the token lacks the required scope: {scope}"
        return AuthFailure(403, self._header("insufficient_scope", description, scope),
                           {"error": "insufficient_scope", "error_description": description})

    def unavailable(self, description: str) -> AuthFailure:
        # Not the client's fault: a 401 would send it off to re-authenticate for nothing.
        return AuthFailure(503, (("retry-after", "5"),),
                           {"error": "temporarily_unavailable", "error_description": description})


class TokenVerifier(Protocol):
    """One kind of bearer token: whether a token is of this kind, and what it proves."""

    def claims(self, token: str) -> bool: ...

    async def verify(self, token: str) -> Principal | AuthFailure: ...


def _claim_list(value: Any) -> frozenset[str]:
    """Groups and scopes arrive as a JSON list or a space-separated string, depending on the IdP."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    return frozenset()


class JwtAuthenticator:
    """Validates JWT access tokens issued for this gateway by the configured issuer."""

    def __init__(
        self,
        settings: Settings,
        access: AccessPolicy,
        *,
        jwks: JwksCache | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        auth = settings.auth
        if not (auth.issuer and auth.jwks_url):
            raise ValueError("JWT authentication needs auth.issuer and auth.jwks_url")
        self.issuer = auth.issuer
        self.audience = auth.audience or settings.canonical_resource
        self.algorithms = frozenset(auth.algorithms)
        self.leeway = auth.leeway_seconds
        self.required_scopes = frozenset(auth.required_scopes)
        self.claim_names = (auth.groups_claim, auth.agent_claim, auth.user_claim)
        self.access = access
        self.challenges = Challenges(settings.canonical_resource, auth.required_scopes or auth.scopes_supported)
        self.jwks = jwks or JwksCache(auth.jwks_url, self.algorithms, cache_seconds=auth.jwks_cache_seconds,
                                      min_refresh_seconds=auth.jwks_min_refresh_seconds)
        self._now = wall_clock
        self._cache: dict[bytes, tuple[Principal, float]] = {}

    def claims(self, token: str) -> bool:
        # A compact JWS has exactly three dot-separated parts; anything else is not ours.
        return token.count(".") == 2

    async def authenticate(self, headers: dict[str, str]) -> Principal | AuthFailure:
        token = bearer_token(headers)
        if token is None:
            return self.challenges.missing()
        return await self.verify(token)

    async def verify(self, token: str) -> Principal | AuthFailure:
        """A Principal for a valid token; the 401/403/503 to answer otherwise."""
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._cache.get(digest)
        if hit is not None:
            if self._now() < hit[1]:
                return hit[0]
            del self._cache[digest]
        try:
            claims = await self._decode(token)
        except JwksUnavailable as exc:
            log.error("%s", exc)
            return self.challenges.unavailable("the token issuer's keys cannot be fetched right now")
        except jwt.PyJWTError as exc:
            log.info("refused JWT: %s", exc)
            return self.challenges.invalid(_describe(exc))
        principal = self._principal(claims)
        missing = self.required_scopes - principal.scopes
        if missing:
            return self.challenges.insufficient_scope(sorted(self.required_scopes))
        self._remember(digest, principal, float(claims["exp"]))
        return principal

    async def _decode(self, token: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        if alg not in self.algorithms:  # 'none' and HS* can never be in the list (config refuses them)
            raise jwt.InvalidAlgorithmError(f"algorithm {alg!r} is not allowed")
        kid = header.get("kid")
        key = await self.jwks.get(kid if isinstance(kid, str) else None)
        if key is None:
            raise jwt.InvalidKeyError(f"unknown key id {kid!r}")
        if alg not in key.algorithms:
            raise jwt.InvalidAlgorithmError(f"key {kid!r} cannot verify {alg}")
        return jwt.decode(
            token, key.key, algorithms=[alg], audience=self.audience, issuer=self.issuer, leeway=self.leeway,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )

    def _principal(self, claims: dict[str, Any]) -> Principal:
        groups_claim, agent_claim, user_claim = self.claim_names
        groups = _claim_list(claims.get(groups_claim))
        scopes = _claim_list(claims.get("scope")) | _claim_list(claims.get("scp"))
        sub = str(claims["sub"])
        agent = claims.get(agent_claim) or claims.get("azp") or sub
        user = claims.get(user_claim)
        return Principal(id=sub, agent=str(agent), user=None if user is None else str(user), groups=groups,
                         roles=self.access.roles_for(groups), scopes=scopes, via="jwt")

    def _remember(self, digest: bytes, principal: Principal, exp: float) -> None:
        if len(self._cache) >= _TOKEN_CACHE_MAX:
            now = self._now()
            for k in [k for k, (_, e) in self._cache.items() if e <= now]:
                del self._cache[k]
            if len(self._cache) >= _TOKEN_CACHE_MAX:
                # Still full of live tokens: drop the oldest half (dicts keep insertion order).
                for k in list(self._cache)[: _TOKEN_CACHE_MAX // 2]:
                    del self._cache[k]
        self._cache[digest] = (principal, exp)

    async def aclose(self) -> None:
        await self.jwks.aclose()


def _describe(exc: jwt.PyJWTError) -> str:
    """A short, safe reason for the client (never the token, never a stack trace)."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token was issued for another resource (audience)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token is from an untrusted issuer"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the token signature is invalid"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks the {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidAlgorithmError | jwt.InvalidKeyError):
        return str(exc)
    return "the token is malformed"


class ApiKeyAuthenticator:
    """Triplock API keys (``tlk_<id>_<secret>``), looked up by id, compared in constant time.

    The key file is re-read when it changes (checked at most every ``reload_seconds``), so
    ``triplock keys revoke`` takes effect on a running gateway without a restart.
    """

    def __init__(self, store: KeyStore, access: AccessPolicy, challenges: Challenges, *,
                 reload_seconds: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.access = access
        self.challenges = challenges
        self.reload_seconds = reload_seconds
        self._clock = clock
        self._records: dict[str, ApiKeyRecord] = {}
        self._signature: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        # Verified keys by their SHA-256, dropped whenever the key file changes (revocation).
        self._verified: dict[bytes, Principal] = {}

    def claims(self, token: str) -> bool:
        return token.startswith("tlk_")

    async def authenticate(self, headers: dict[str, str]) -> Principal | AuthFailure:
        token = bearer_token(headers)
        if token is None:
            return self.challenges.missing()
        return await self.verify(token)

    async def verify(self, token: str) -> Principal | AuthFailure:
        self._maybe_reload()
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._verified.get(digest)
        if hit is not None:
            return hit
        key_id = parse_key(token)
        if key_id is None:
            return self.challenges.invalid("malformed API key")
        record = self._records.get(key_id)
        # Hash even for an unknown id, so timing does not tell which ids exist.
        ok = key_matches(token, record.hash if record is not None else "sha256:" + "0" * 64)
        if record is None or not ok:
            return self.challenges.invalid("unknown API key")
        if not record.active:
            return self.challenges.invalid("the API key was revoked")
        groups = frozenset(record.groups)
        principal = Principal(id=record.principal, agent=record.agent, groups=groups,
                              roles=self.access.roles_for(groups), via="api_key")
        if len(self._verified) >= _TOKEN_CACHE_MAX:
            self._verified.clear()
        self._verified[digest] = principal
        return principal

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._checked_at < self.reload_seconds:
            return
        self._checked_at = now
        signature = self.store.signature()
        if signature == self._signature:
            return
        try:
            self._records = self.store.load()
        except (OSError, ValueError) as exc:
            # Keep serving with the keys we had: a bad edit must not lock every agent out.
            log.error("cannot read API key file %s: %s", self.store.path, exc)
            return
        self._signature = signature
        self._verified = {}

    async def aclose(self) -> None:
        return None


class ChainAuthenticator:
    """One bearer token, verified by the first verifier that claims its shape."""

    def __init__(self, verifiers: Sequence[TokenVerifier], challenges: Challenges) -> None:
        self.verifiers = tuple(verifiers)
        self.challenges = challenges

    async def authenticate(self, headers: dict[str, str]) -> Principal | AuthFailure:
        token = bearer_token(headers)
        if token is None:
            return self.challenges.missing()
        for verifier in self.verifiers:
            if verifier.claims(token):
                return await verifier.verify(token)
        return self.challenges.invalid("unrecognised token")

    async def aclose(self) -> None:
        for verifier in self.verifiers:
            close = getattr(verifier, "aclose", None)
            if close is not None:
                await close()


def build_authenticator(settings: Settings, access: AccessPolicy) -> Authenticator:
    """The authenticator ``[auth]`` describes: NoAuth, API keys, or JWT (plus API keys)."""
    auth = settings.auth
    if auth.mode == "none":
        return NoAuth()
    challenges = Challenges(settings.canonical_resource, auth.required_scopes or auth.scopes_supported)
    verifiers: list[TokenVerifier] = []
    if auth.mode == "api_key" or auth.api_keys:
        verifiers.append(ApiKeyAuthenticator(KeyStore(auth.api_keys_file), access, challenges))
    if auth.mode == "jwt":
        verifiers.append(JwtAuthenticator(settings, access))
    return ChainAuthenticator(verifiers, challenges)
