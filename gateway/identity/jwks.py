"""The issuer's signing keys (JWKS), fetched over HTTP, cached, and refreshed when keys rotate.

Refresh happens in two cases: the cache is older than ``cache_seconds``, or a token names a key
id we do not know (the issuer rotated). The second is rate-limited by ``min_refresh_seconds`` so
a stream of tokens with made-up ``kid`` values cannot turn the gateway into a load generator
against the identity provider. A failed refresh keeps the keys we had (stale beats down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

log = logging.getLogger("triplock.auth")

# Which JWS algorithms each key type can verify: a key is only ever used with its own family,
# so an RSA public key can never be fed to HMAC ("alg confusion").
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_FAMILY = {
    "RSA": frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}),
    "EC": frozenset(_EC_CURVES),
    "OKP": frozenset({"EdDSA"}),
}


class JwksUnavailable(Exception):
    """No keys could be obtained from the issuer (never fetched successfully)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One verification key from the JWKS and the algorithms it may verify."""

    kid: str | None
    key: Any  # a cryptography public key object
    algorithms: frozenset[str]


def _signing_key(jwk: dict[str, Any], allowed: frozenset[str]) -> SigningKey | None:
    """A usable verification key, or None for keys we must not use (symmetric, encryption-only...)."""
    kty = jwk.get("kty")
    if kty not in _FAMILY or jwk.get("use", "sig") != "sig":
        return None  # 'oct' (shared secrets) is never accepted: a JWKS is public
    algs = _FAMILY[kty] & allowed
    if "alg" in jwk:
        algs &= {jwk["alg"]}
    if kty == "EC":
        algs = frozenset(a for a in algs if _EC_CURVES[a] == jwk.get("crv"))
    if not algs:
        return None
    try:
        parsed = jwt.PyJWK(jwk, algorithm=next(iter(sorted(algs))))
    except jwt.PyJWTError as exc:
        log.warning("skipping unusable JWKS key %s: %s", jwk.get("kid"), exc)
        return None
    return SigningKey(jwk.get("kid"), parsed.key, algs)


class JwksCache:
    """Keys by ``kid``, loaded lazily and refreshed as described in the module docstring."""

    def __init__(
        self,
        url: str,
        algorithms: frozenset[str],
        *,
        cache_seconds: float = 600.0,
        min_refresh_seconds: float = 30.0,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.algorithms = algorithms
        self.cache_seconds = cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(5.0), follow_redirects=False)
        self._owns_http = http is None
        self._clock = clock
        self._keys: dict[str | None, SigningKey] | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0  # observable by tests and metrics

    async def get(self, kid: str | None) -> SigningKey | None:
        """The key for ``kid`` (None: the only key, if the set has exactly one)."""
        now = self._clock()
        may_fetch = now - self._attempted_at >= self.min_refresh_seconds  # failed fetches count too
        if (self._keys is None or now - self._fetched_at >= self.cache_seconds) and may_fetch:
            await self._refresh(now, self._attempted_at)
        key = self._lookup(kid)
        if key is None and now - self._attempted_at >= self.min_refresh_seconds:
            await self._refresh(now, self._attempted_at)
            key = self._lookup(kid)
        if key is None and self._keys is None:
            raise JwksUnavailable(f"could not fetch the JWKS from {self.url}")
        return key

    def _lookup(self, kid: str | None) -> SigningKey | None:
        keys = self._keys or {}
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    async def _refresh(self, now: float, seen_attempt: float) -> None:
        async with self._lock:
            if self._attempted_at != seen_attempt:
                return  # another request refreshed while we waited: use its result (single flight)
            self._attempted_at = now
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("JWKS fetch from %s failed (%s); keeping %d cached keys",
                            self.url, exc, len(self._keys or {}))
                return
            self._keys, self._fetched_at = keys, now

    async def _fetch(self) -> dict[str | None, SigningKey]:
        self.fetches += 1
        resp = await self._http.get(self.url, headers={"accept": "application/json"})
        if resp.status_code != 200:
            raise ValueError(f"HTTP {resp.status_code}")
        doc = resp.json()
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError("not a JWK Set (no 'keys' list)")
        out: dict[str | None, SigningKey] = {}
        for jwk in doc["keys"]:
            if isinstance(jwk, dict) and (key := _signing_key(jwk, self.algorithms)) is not None:
                out[key.kid] = key
        if not out:
            raise ValueError("the JWK Set holds no usable signing key")
        return out

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
