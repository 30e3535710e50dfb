"""JWT access tokens, signed with real keys and checked against a JWKS served on loopback."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from mcp.client.auth.utils import extract_field_from_www_auth

from gateway.identity.authenticators import JwtAuthenticator, bearer_token, build_authenticator
from gateway.identity.jwks import JwksCache
from gateway.identity.principal import AuthFailure, Principal
from gateway.identity.roles import AccessPolicy
from tests.identity.conftest import RESOURCE, jwt_settings
from tests.identity.idp import FakeIdp, new_key

METADATA = "http://127.0.0.1:18080/.well-known/oauth-protected-resource/mcp"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def authn(idp: FakeIdp, **auth: Any) -> JwtAuthenticator:
    return JwtAuthenticator(jwt_settings(idp, **auth), AccessPolicy())


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


class _Resp:
    """Just enough of an httpx response for the SDK's WWW-Authenticate parser."""

    def __init__(self, failure: AuthFailure) -> None:
        self.status_code = failure.status
        self.headers = httpx.Headers(list(failure.headers))  # case-insensitive, like the real thing


def challenge(failure: Principal | AuthFailure, field: str) -> str | None:
    assert isinstance(failure, AuthFailure), failure
    return extract_field_from_www_auth(_Resp(failure), field)  # type: ignore[arg-type]


async def test_valid_token_gives_principal_with_groups_roles_and_agent(idp: FakeIdp) -> None:
    auth = authn(idp)
    token = idp.token(aud=RESOURCE, sub="alice", client_id="codex-ci", groups=["agents-run", "eng"],
                      scope="mcp:tools read")
    who = await auth.authenticate(bearer(token))
    assert isinstance(who, Principal), who
    assert (who.id, who.agent, who.via) == ("alice", "codex-ci", "jwt")
    assert who.groups == {"agents-run", "eng"} and who.roles == {"agents-run"}
    assert who.scopes == {"mcp:tools", "read"}


async def test_ec_key_tokens_are_accepted_too(idp: FakeIdp) -> None:
    token = idp.token(key=idp.keys[1], aud=RESOURCE)
    assert isinstance(await authn(idp).authenticate(bearer(token)), Principal)


async def test_no_token_gets_401_with_resource_metadata_and_scope(idp: FakeIdp) -> None:
    failure = await authn(idp, required_scopes=("mcp:tools",)).authenticate({})
    assert isinstance(failure, AuthFailure) and failure.status == 401
    assert challenge(failure, "resource_metadata") == METADATA
    assert challenge(failure, "scope") == "mcp:tools"
    assert challenge(failure, "error") is None  # RFC 6750 3.1: no error code without a token


def _tamper(token: str) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def _alg_none(idp: FakeIdp) -> str:
    now = int(time.time())
    head = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    claims = {"iss": idp.issuer, "aud": RESOURCE, "sub": "mallory", "exp": now + 300}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{body}."


def _hs256_with_public_key(idp: FakeIdp) -> str:
    # The classic confusion attack: sign with HMAC using the *public* key as the secret.
    pem = idp.keys[0].public_jwk()["n"].encode()
    return jwt.encode({"iss": idp.issuer, "aud": RESOURCE, "sub": "mallory", "exp": int(time.time()) + 300},
                      pem, algorithm="HS256", headers={"kid": idp.keys[0].kid})


REFUSALS = {
    "wrong audience": (lambda idp: idp.token(aud="https://other.example.com/mcp"), "audience"),
    "no audience": (lambda idp: idp.token(), "aud"),
    "wrong issuer": (lambda idp: idp.token(aud=RESOURCE, iss="https://evil.example.com"), "issuer"),
    "expired": (lambda idp: idp.token(aud=RESOURCE, exp=int(time.time()) - 120), "expired"),
    "not yet valid": (lambda idp: idp.token(aud=RESOURCE, nbf=int(time.time()) + 600), "not valid yet"),
    "alg none": (_alg_none, "not allowed"),
    "hs256 with public key": (_hs256_with_public_key, "not allowed"),
    "unknown kid": (lambda idp: idp.token(key=new_key(), aud=RESOURCE), "unknown key id"),
    "tampered signature": (lambda idp: _tamper(idp.token(aud=RESOURCE)), "signature"),
    "no subject": (lambda idp: idp.token(aud=RESOURCE, sub=None), "sub"),
    "garbage": (lambda idp: "a.b.c", "malformed"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_bad_tokens_get_401_invalid_token(idp: FakeIdp, case: str) -> None:
    make, words = REFUSALS[case]
    failure = await authn(idp).authenticate(bearer(make(idp)))
    assert isinstance(failure, AuthFailure), f"{case} was accepted"
    assert failure.status == 401
    assert challenge(failure, "error") == "invalid_token"
    assert challenge(failure, "resource_metadata") == METADATA
    assert words in failure.body["error_description"]


async def test_expiry_within_leeway_is_accepted(idp: FakeIdp) -> None:
    token = idp.token(aud=RESOURCE, exp=int(time.time()) - 5)
    assert isinstance(await authn(idp, leeway_seconds=30).authenticate(bearer(token)), Principal)


async def test_missing_scope_gets_403_insufficient_scope(idp: FakeIdp) -> None:
    auth = authn(idp, required_scopes=("mcp:tools",))
    failure = await auth.authenticate(bearer(idp.token(aud=RESOURCE, scope="other")))
    assert isinstance(failure, AuthFailure) and failure.status == 403
    assert challenge(failure, "error") == "insufficient_scope"
    assert challenge(failure, "scope") == "mcp:tools"
    ok = await auth.authenticate(bearer(idp.token(aud=RESOURCE, scope="mcp:tools other")))
    assert isinstance(ok, Principal)


async def test_rotated_key_is_picked_up(idp: FakeIdp) -> None:
    auth = authn(idp)
    assert isinstance(await auth.authenticate(bearer(idp.token(aud=RESOURCE))), Principal)
    new = idp.rotate()
    who = await auth.authenticate(bearer(idp.token(key=new, aud=RESOURCE, sub="after-rotation")))
    assert isinstance(who, Principal) and who.id == "after-rotation"
    assert idp.jwks_fetches == 2


async def test_unknown_kid_refresh_is_rate_limited(idp: FakeIdp) -> None:
    clock = FakeClock()
    settings = jwt_settings(idp)
    cache = JwksCache(idp.jwks_url, frozenset(settings.auth.algorithms), min_refresh_seconds=30, clock=clock)
    auth = JwtAuthenticator(settings, AccessPolicy(), jwks=cache)
    stranger = new_key()
    for _ in range(5):
        assert isinstance(await auth.authenticate(bearer(idp.token(key=stranger, aud=RESOURCE))), AuthFailure)
    assert idp.jwks_fetches == 1, "made-up key ids must not hammer the IdP"
    idp.keys.append(stranger)  # the IdP publishes it now
    clock.now += 31
    assert isinstance(await auth.authenticate(bearer(idp.token(key=stranger, aud=RESOURCE))), Principal)
    assert idp.jwks_fetches == 2


async def test_validated_tokens_are_cached_until_expiry(idp: FakeIdp) -> None:
    wall = FakeClock()
    wall.now = time.time()
    auth = JwtAuthenticator(jwt_settings(idp), AccessPolicy(), wall_clock=wall)
    decodes = 0
    real_decode = auth._decode

    async def counting_decode(token: str) -> dict[str, Any]:
        nonlocal decodes
        decodes += 1
        return await real_decode(token)

    auth._decode = counting_decode  # type: ignore[method-assign]
    token = idp.token(aud=RESOURCE, lifetime=60)
    for _ in range(3):
        assert isinstance(await auth.authenticate(bearer(token)), Principal)
    assert decodes == 1, "a validated token is not verified again before it expires"
    wall.now += 61  # past exp: the entry is dropped and the token verified afresh
    await auth.authenticate(bearer(token))
    assert decodes == 2


async def test_unreachable_jwks_is_503_not_401(idp: FakeIdp) -> None:
    idp.jwks_status = 500
    failure = await authn(idp).authenticate(bearer(idp.token(aud=RESOURCE)))
    assert isinstance(failure, AuthFailure) and failure.status == 503


async def test_chain_routes_api_keys_and_jwts_and_refuses_other_tokens(idp: FakeIdp, tmp_path: Any) -> None:
    from gateway.identity.api_keys import KeyStore

    settings = jwt_settings(idp, api_keys_file=tmp_path / "keys.json")
    key, _ = KeyStore(settings.auth.api_keys_file).create("svc-bot", ("agents-run",))
    chain = build_authenticator(settings, AccessPolicy())
    by_key = await chain.authenticate(bearer(key))
    by_jwt = await chain.authenticate(bearer(idp.token(aud=RESOURCE)))
    assert isinstance(by_key, Principal) and by_key.via == "api_key"
    assert isinstance(by_jwt, Principal) and by_jwt.via == "jwt"
    other = await chain.authenticate(bearer("opaque-token"))
    assert isinstance(other, AuthFailure) and other.status == 401
    assert challenge(other, "error") == "invalid_token"
    basic = await chain.authenticate({"authorization": "Basic dXNlcjpwYXNz"})
    assert isinstance(basic, AuthFailure) and challenge(basic, "error") is None


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer abc.def", "abc.def"), ("bearer  abc.def ", "abc.def"), (" BEARER\tabc.def", "abc.def"),
    ("Bearer", None), ("Bearer abc def", None), ("Basic abc", None), ("", None), ("Bearerabc", None),
])
def test_bearer_token_takes_exactly_one_token_after_the_scheme(header: str, token: str | None) -> None:
    assert bearer_token({"authorization": header}) == token
