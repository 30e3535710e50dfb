"""DPoP (RFC 9449, SEP-1932): access tokens bound to a key only this gateway holds.

A DPoP-bound token is useless without the private key: every request that presents it also
carries a *proof*, a JWT signed with that key naming the request's method and URL, when it was
made, a unique ``jti``, the hash of the token (``ath``) and the server's latest nonce when the
server asks for one. The token endpoint binds the token to the key's RFC 7638 thumbprint when
the token request carries such a proof.

:class:`DPoPKey` is one ES256 key, created for each sign-in and kept with the grant in the store
(its private JWK next to the refresh token), so every replica proves possession of the same key.
:class:`NonceMemory` keeps, per origin, the last ``DPoP-Nonce`` a server sent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

ALG = "ES256"
USE_DPOP_NONCE = "use_dpop_nonce"
_PROOF_TYPE = "dpop+jwt"
_COORDINATE_BYTES = 32  # P-256
_MAX_NONCE = 1024  # a nonce is echoed in every proof: a server's oversized one is not kept
_NONCE_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\"}  # RFC 9449 NQCHAR
_NONCE_ERROR = re.compile(r'(?:^|[\s,])error\s*=\s*"?use_dpop_nonce(?:"|\s|,|$)')


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _coordinate(value: int) -> str:
    return b64url(value.to_bytes(_COORDINATE_BYTES, "big"))


def token_hash(access_token: str) -> str:
    """The ``ath`` claim: base64url of the SHA-256 of the token's ASCII bytes (RFC 9449 section 4.2)."""
    return b64url(hashlib.sha256(access_token.encode("ascii")).digest())


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """The RFC 7638 SHA-256 thumbprint of an EC public JWK (what a bound token's ``cnf.jkt`` names)."""
    required = {name: jwk[name] for name in ("crv", "kty", "x", "y")}  # lexicographic order, no whitespace
    return b64url(hashlib.sha256(json.dumps(required, separators=(",", ":")).encode("ascii")).digest())


@lru_cache(maxsize=256)
def target_uri(url: str) -> str:
    """The ``htu`` of a request to ``url``: scheme, host, port and path; no userinfo, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path or '/'}"


@lru_cache(maxsize=256)
def origin(url: str) -> str:
    """The origin ``url`` belongs to (nonces are per server, RFC 9449 sections 8 and 9)."""
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{(parts.hostname or '').lower()}:{parts.port or ''}"


class DPoPKey:
    """An ES256 key pair that signs DPoP proofs; its private JWK is what the grant record keeps."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("a DPoP key for ES256 must be on P-256")
        self._key = private_key
        numbers = private_key.public_key().public_numbers()
        self.public_jwk: dict[str, str] = {"kty": "EC", "crv": "P-256", "x": _coordinate(numbers.x),
                                           "y": _coordinate(numbers.y)}
        self.thumbprint = jwk_thumbprint(self.public_jwk)

    @classmethod
    def generate(cls) -> DPoPKey:
        """A new key (one per sign-in)."""
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def from_jwk(cls, jwk: Any) -> DPoPKey:
        """The key a grant record keeps; ValueError when the record's key is damaged."""
        if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            raise ValueError("the grant's DPoP key is not a P-256 JWK")
        try:
            public = ec.EllipticCurvePublicNumbers(_b64url_int(jwk["x"]), _b64url_int(jwk["y"]), ec.SECP256R1())
            private = ec.EllipticCurvePrivateNumbers(_b64url_int(jwk["d"]), public).private_key()
        except (KeyError, TypeError, ValueError):
            raise ValueError("the grant's DPoP key is damaged") from None
        return cls(private)

    def private_jwk(self) -> dict[str, str]:
        """The key with its private member ``d``: for the grant record only, never for a proof."""
        return {**self.public_jwk, "d": _coordinate(self._key.private_numbers().private_value)}

    def proof(self, method: str, url: str, *, access_token: str | None = None, nonce: str | None = None) -> str:
        """A fresh proof for one request (RFC 9449 section 4.2): new ``jti``, ``iat`` now, ``htu`` without
        query and fragment; ``ath`` when a token goes with it, ``nonce`` when the server gave one."""
        claims: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": method.upper(), "htu": target_uri(url),
                                  "iat": int(time.time())}
        if access_token is not None:
            claims["ath"] = token_hash(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        return jwt.encode(claims, self._key, algorithm=ALG, headers={"typ": _PROOF_TYPE, "jwk": self.public_jwk})


class NonceMemory:
    """The last ``DPoP-Nonce`` each server (origin) sent; proofs to it carry that nonce."""

    def __init__(self) -> None:
        self._by_origin: dict[str, str] = {}

    def get(self, url: str) -> str | None:
        """The nonce to put in a proof for a request to ``url`` (None before the server sent one)."""
        return self._by_origin.get(origin(url))

    def learn(self, url: str, value: str | None) -> bool:
        """Keep the nonce a response from ``url`` carried; True when it is a new, well-formed one."""
        if not value or len(value) > _MAX_NONCE or not set(value) <= _NONCE_CHARS:
            return False
        key = origin(url)
        if self._by_origin.get(key) == value:
            return False
        self._by_origin[key] = value
        return True


def asks_for_nonce(www_authenticate: str | None) -> bool:
    """Whether a 401's ``WWW-Authenticate`` holds a DPoP challenge with ``error="use_dpop_nonce"`` (section 9).

    A header may hold a Bearer and a DPoP challenge together: only the DPoP one's error counts.
    """
    if not www_authenticate:
        return False
    lowered = www_authenticate.lower()
    start = lowered.find("dpop")
    while start != -1:
        if start == 0 or lowered[start - 1] in " ,":
            rest = lowered[start + 4:]
            nxt = rest.find("bearer")  # the DPoP challenge ends where another scheme starts
            params = rest if nxt == -1 else rest[:nxt]
            if _NONCE_ERROR.search(params):
                return True
        start = lowered.find("dpop", start + 4)
    return False
