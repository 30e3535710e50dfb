"""Tokens from an authorization code grant an admin signed in for once, kept alive by the gateway.

The grant (access and refresh token, the client registration, scopes) lives in the store
(`gateway.ports.grants.GrantStore`), so every replica uses and refreshes the same one and it
survives restarts; this process only caches the access token until shortly before it expires.
Refreshing is done by one replica at a time (a claim in the store); the others wait for the new
version and read it, so a rotated refresh token is never spent twice. Writes are compare-and-set
on the grant's version: a refresh that lost a race re-reads instead of overwriting.

Same interface as :class:`adapters.upstreams.oauth.ClientCredentialsTokenSource` (ready, token,
invalidate, refused, headers, aclose). Without a grant, requests go without a token (the
upstream's 401 tells the scope it wants), and the call fails with :class:`NeedsSignIn`, whose
message names the command that fixes it. A 403 ``insufficient_scope`` records the union of the
granted and the challenged scopes (SEP-2350) for the next sign-in, and asks for one.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from adapters.upstreams.dpop import USE_DPOP_NONCE, DPoPKey, NonceMemory, asks_for_nonce
from adapters.upstreams.oauth_discovery import Challenge
from adapters.upstreams.oauth_errors import NeedsSignIn, TokenRequestFailed
from adapters.upstreams.oauth_registration import ClientRegistration
from adapters.upstreams.oauth_token_cache import DEFAULT_LIFETIME
from gateway.config import UpstreamConfig
from gateway.ports.grants import GrantStore, StoredGrant

_CLAIM_SECONDS = 30.0  # how long one replica may hold the refresh before another may take over
_WAIT_FOR_PEER = 10.0  # how long a replica waits for the one refreshing before it gives up
DPOP_KEY = "dpop_key"  # the grant record's DPoP key (a private JWK): tokens bound to it need it on every request


def sign_in_hint(upstream: str) -> str:
    """The action that connects ``upstream`` again (CLI or API; the console has no Connect button)."""
    return (f"an admin runs `triplock upstreams authorize {upstream}` (or POST /api/upstreams/{upstream}/authorize)"
            " and signs in")


def with_resource(form: dict[str, str], resource: Any) -> dict[str, str]:
    """A token request's form plus the grant's RFC 8707 ``resource`` indicator, when it has one."""
    return {**form, "resource": str(resource)} if resource else form


async def token_request(http: httpx.AsyncClient, url: str, form: dict[str, str], client: ClientRegistration,
                        step: str, dpop: DPoPKey | None = None, nonces: NonceMemory | None = None) -> dict[str, Any]:
    """POST a token request authenticated as ``client``; the JSON answer with a usable access_token.

    With ``dpop`` the request carries a proof of that key (RFC 9449 section 5), and once more with the
    server's nonce when it answers ``use_dpop_nonce``; a DPoP-bound answer comes back with the key's
    private JWK under ``DPOP_KEY`` (what the grant record keeps), a Bearer one without it.
    """
    nonces = nonces if nonces is not None else NonceMemory()
    for attempt in (1, 2):
        fields, basic = client.token_auth()  # each attempt its own client authentication (an assertion is single-use)
        headers = {"accept": "application/json"}
        if dpop is not None:
            headers["dpop"] = dpop.proof("POST", url, nonce=nonces.get(url))
        try:
            resp = await http.post(url, data={**form, **fields}, auth=basic or httpx.USE_CLIENT_DEFAULT,
                                   headers=headers)
        except httpx.HTTPError as exc:
            raise TokenRequestFailed(f"{step} to {url}: unreachable ({type(exc).__name__})") from None
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        learnt = dpop is not None and nonces.learn(url, resp.headers.get("dpop-nonce"))
        if not (attempt == 1 and learnt and resp.status_code == 400 and isinstance(doc, dict)
                and doc.get("error") == USE_DPOP_NONCE):
            break
    if resp.status_code != 200 or not isinstance(doc, dict):
        code = doc.get("error") if isinstance(doc, dict) else None
        code = code if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) < 64 else None
        raise TokenRequestFailed(f"{step} to {url}: answered HTTP {resp.status_code}" + (f" ({code})" if code else ""),
                                 code)
    token = doc.get("access_token")
    if not isinstance(token, str) or not token or any(c in token for c in "\r\n\x00"):
        raise TokenRequestFailed(f"{step} to {url}: sent no usable access_token")
    doc.pop(DPOP_KEY, None)  # only this gateway says which key a token is bound to
    if dpop is not None and str(doc.get("token_type", "")).lower() == "dpop":
        doc[DPOP_KEY] = dpop.private_jwk()
    return doc


def grant_from_answer(doc: dict[str, Any], requested: str | None, previous_refresh: str | None) -> dict[str, Any]:
    """The token fields of a grant record from a token endpoint's answer (wall-clock expiry)."""
    try:
        lifetime = float(doc.get("expires_in") or DEFAULT_LIFETIME)
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    scope = doc.get("scope") if isinstance(doc.get("scope"), str) else requested
    refresh = doc.get("refresh_token") if isinstance(doc.get("refresh_token"), str) else previous_refresh
    return {"access_token": doc["access_token"], "refresh_token": refresh, "expires_at": time.time() + lifetime,
            "scopes": sorted(set((scope or "").split())), DPOP_KEY: doc.get(DPOP_KEY)}


class AuthorizationCodeTokenSource:
    """An upstream's access token from the grant in the store, refreshed before it expires."""

    ready = True  # requests always go out; without a grant they go without a token (the 401 names the scope)

    def __init__(self, config: UpstreamConfig, grants: GrantStore, *, refresh_margin: float = 60.0,
                 http: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.time) -> None:
        self.upstream = config.name
        self.config = config
        self.grants = grants
        self.refresh_margin = refresh_margin
        self.token_url: str | None = None
        self.last_challenge = Challenge()  # the upstream's last 401/403 challenge (scope selection)
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
        self._owns_http = http is None
        self._clock = clock
        self._holder = os.urandom(8).hex()
        self._token: str | None = None
        self._good_until = float("-inf")
        self._version = 0
        self._fresh = False  # the cached token came from a refresh just now: a 401 on it needs a person
        self._lock = asyncio.Lock()
        self.refreshes = 0
        self.nonces = NonceMemory()  # DPoP nonces of the authorization server and the upstream (per origin)
        self._dpop: DPoPKey | None = None  # the key the cached token is bound to; None: a Bearer token
        self._dpop_jwk: Any = None

    @property
    def needs_sign_in_message(self) -> str:
        return f"upstream {self.upstream!r} needs sign-in: {sign_in_hint(self.upstream)}"

    async def headers(self) -> dict[str, str]:
        """The credentials of a POST to the upstream (see :meth:`request_headers`)."""
        return await self.request_headers("POST")

    async def request_headers(self, method: str, url: str | None = None) -> dict[str, str]:
        """The Authorization header for one request to ``url`` (the upstream's by default), and with a DPoP-bound
        token its proof (RFC 9449 section 7: ``DPoP`` scheme, this request's ``htm``/``htu``, ``ath``, the
        server's nonce); none while no grant exists (so the upstream's 401 tells its scope)."""
        token = await self.token_or_none()
        if not token:
            return {}
        key = self._dpop  # read with the token, no await between: the pair _adopt set together
        if key is None:
            return {"authorization": f"Bearer {token}"}
        url = url or self.config.url or ""
        return {"authorization": f"DPoP {token}",
                "dpop": key.proof(method, url, access_token=token, nonce=self.nonces.get(url))}

    def nonce_refused(self, status: int, headers: Any, url: str | None = None) -> bool:
        """Learn a ``DPoP-Nonce`` from the answer to a request to ``url`` (the upstream's by default); True when
        it was a 401 asking for that nonce (``use_dpop_nonce``): one retry with a new proof can succeed (section 9).
        """
        url = url or self.config.url or ""
        learnt = self._dpop is not None and self.nonces.learn(url, headers.get("dpop-nonce"))
        return learnt and status == 401 and asks_for_nonce(headers.get("www-authenticate"))

    async def exchange_code(self, http: httpx.AsyncClient, url: str, form: dict[str, str], client: ClientRegistration,
                            *, offers_dpop: bool) -> dict[str, Any]:
        """The sign-in's token request (authorization_code), with a DPoP proof of a new key when ``oauth_dpop``
        says so ('auto': ``offers_dpop``, the issuer's metadata lists ES256 in ``dpop_signing_alg_values_supported``,
        as discovery read it when the sign-in began)."""
        mode = self.config.oauth_dpop
        use = mode == "always" or (mode == "auto" and offers_dpop)
        step = "token request (authorization_code)"
        doc = await token_request(http, url, form, client, step, DPoPKey.generate() if use else None, self.nonces)
        self._require_bound(doc, step, url)
        return doc

    def _require_bound(self, doc: dict[str, Any], step: str, url: str) -> None:
        """With ``oauth_dpop = 'always'``, a token not bound to the key is refused (fail closed)."""
        if self.config.oauth_dpop == "always" and DPOP_KEY not in doc:
            kind = str(doc.get("token_type") or "Bearer")
            kind = kind if kind.isalnum() and len(kind) < 32 else "non-DPoP"  # the server's word, if a plain name
            raise TokenRequestFailed(f"{step} to {url}: answered a {kind} token, not a DPoP-bound one, and oauth_dpop"
                                     " is 'always'")

    async def token(self) -> str:
        """A token valid for at least ``refresh_margin`` more seconds; NeedsSignIn without a grant."""
        token = await self.token_or_none()
        if token is None:
            raise NeedsSignIn(self.needs_sign_in_message)
        return token

    async def token_or_none(self) -> str | None:
        if self._token is not None and self._clock() < self._good_until:
            return self._token
        async with self._lock:
            if self._token is not None and self._clock() < self._good_until:
                return self._token
            stored = await self.grants.load_grant(self.upstream)
            if stored is None:
                self._token = self._dpop = self._dpop_jwk = None  # signed out: no token, no key to prove
                return None
            if self._usable(stored):
                self._adopt(stored, fresh=False)
                return self._token
            return await self._refresh(stored)

    def invalidate(self) -> None:
        """Forget the cached token: the next call reads the store (and refreshes if needed)."""
        self._token = None
        self._good_until = float("-inf")

    def adopt(self, stored: StoredGrant) -> None:
        """Use a grant just written by a sign-in in this process."""
        self._adopt(stored, fresh=True)

    async def refused(self, status: int, www_authenticate: str | None) -> bool:
        """The upstream refused a request: True when one retry with a refreshed token can succeed.

        Without a grant, with a token refused right after a refresh, or on ``insufficient_scope``
        (the scopes wanted are recorded first), raises NeedsSignIn: a person must sign in.
        """
        challenge = Challenge.parse(www_authenticate)
        if challenge.scope or challenge.resource_metadata:
            self.last_challenge = challenge
        if status == 403:
            if challenge.error != "insufficient_scope":
                return False
            await self._want_scopes(challenge.scope)
            raise NeedsSignIn(f"upstream {self.upstream!r} needs more scope ({challenge.scope or 'unnamed'}): "
                              f"{sign_in_hint(self.upstream)} again")
        async with self._lock:
            stored = await self.grants.load_grant(self.upstream)
            if stored is None or self._fresh or not stored.record.get("refresh_token"):
                self.invalidate()
                raise NeedsSignIn(self.needs_sign_in_message if stored is None else
                                  f"upstream {self.upstream!r} refused its token (HTTP {status}) and it cannot be"
                                  f" refreshed: {sign_in_hint(self.upstream)} again")
            if stored.version == self._version:
                await self._refresh(stored)
            else:
                self._adopt(stored, fresh=False)  # another replica refreshed meanwhile
        return True

    async def _want_scopes(self, challenged: str | None) -> None:
        """Remember the union of granted and challenged scopes on the grant for the next sign-in (SEP-2350)."""
        for _ in range(3):
            stored = await self.grants.load_grant(self.upstream)
            if stored is None:
                return
            wanted = sorted(set(stored.record.get("scopes") or ()) | set((challenged or "").split()))
            if stored.record.get("wanted_scopes") == wanted:
                return
            if await self.grants.save_grant(self.upstream, {**stored.record, "wanted_scopes": wanted},
                                            stored.version) is not None:
                return

    def _usable(self, stored: StoredGrant) -> bool:
        expires = float(stored.record.get("expires_at") or 0)
        return bool(stored.record.get("access_token")) and self._clock() < expires - self._margin(stored)

    def _margin(self, stored: StoredGrant) -> float:
        lifetime = float(stored.record.get("lifetime") or 2 * self.refresh_margin)
        return min(self.refresh_margin, lifetime / 2)

    def _adopt(self, stored: StoredGrant, *, fresh: bool) -> None:
        jwk = stored.record.get(DPOP_KEY)
        if jwk != self._dpop_jwk:  # parsed once per key, not per request
            try:
                self._dpop = DPoPKey.from_jwk(jwk) if jwk else None
            except ValueError as exc:  # fail closed: a bound token cannot be used without its key
                self.invalidate()
                raise NeedsSignIn(f"upstream {self.upstream!r}: {exc}; {sign_in_hint(self.upstream)} again") from None
            self._dpop_jwk = jwk
        self._token = str(stored.record["access_token"])
        self._good_until = float(stored.record.get("expires_at") or 0) - self._margin(stored)
        self._version = stored.version
        self._fresh = fresh
        self.token_url = stored.record.get("token_endpoint")

    def _dpop_of(self, record: dict[str, Any]) -> DPoPKey | None:
        """The key a grant's tokens are bound to (its refresh token too: RFC 9449 section 5), or None."""
        if not record.get(DPOP_KEY):
            return None
        try:
            return DPoPKey.from_jwk(record[DPOP_KEY])
        except ValueError as exc:
            raise NeedsSignIn(f"upstream {self.upstream!r}: {exc}; {sign_in_hint(self.upstream)} again") from None

    async def _refresh(self, stored: StoredGrant) -> str | None:
        """Refresh as the one holder of the claim; or wait for the holder and read what it stored."""
        if not stored.record.get("refresh_token"):
            self.invalidate()
            raise NeedsSignIn(f"upstream {self.upstream!r}: its access token expired and the authorization server"
                              f" gave no refresh token: {sign_in_hint(self.upstream)} again")
        if not await self.grants.claim_refresh(self.upstream, self._holder, _CLAIM_SECONDS):
            return await self._await_peer(stored.version)
        try:
            current = await self.grants.load_grant(self.upstream)
            if current is None:
                raise NeedsSignIn(self.needs_sign_in_message)
            if current.version != stored.version and self._usable(current):
                self._adopt(current, fresh=False)
                return self._token
            record = current.record
            client = ClientRegistration.from_dict(record.get("client"))
            if client is None or not record.get("token_endpoint"):
                raise NeedsSignIn(self.needs_sign_in_message)
            form = with_resource({"grant_type": "refresh_token", "refresh_token": str(record["refresh_token"])},
                                 record.get("resource"))
            try:
                doc = await token_request(self._http, str(record["token_endpoint"]), form, client,
                                          "token refresh (refresh_token)", self._dpop_of(record), self.nonces)
            except TokenRequestFailed as exc:
                self.invalidate()
                if exc.error in ("invalid_grant", "invalid_client", "unauthorized_client"):
                    # Refused for good (we hold the claim: no peer's rotation raced this): a person must sign in,
                    # and status must say so instead of showing a grant that cannot be refreshed.
                    await self.grants.drop_grant(self.upstream)
                    raise NeedsSignIn(f"upstream {self.upstream!r}: {exc}; {sign_in_hint(self.upstream)} again"
                                      ) from None
                raise
            self._require_bound(doc, "token refresh (refresh_token)", str(record["token_endpoint"]))
            self.refreshes += 1
            fields = grant_from_answer(doc, " ".join(record.get("scopes") or ()) or None,
                                       str(record["refresh_token"]))
            lifetime = fields["expires_at"] - time.time()
            saved = await self.grants.save_grant(self.upstream, {**record, **fields, "lifetime": lifetime},
                                                 current.version)
            if saved is None:  # lost a race after all: what is stored is newer than ours
                again = await self.grants.load_grant(self.upstream)
                if again is None:
                    raise NeedsSignIn(self.needs_sign_in_message)
                saved = again
            self._adopt(saved, fresh=True)
            return self._token
        finally:
            await self.grants.release_refresh(self.upstream, self._holder)

    async def _await_peer(self, seen: int) -> str | None:
        """Another replica refreshes: poll the store (a short interval, bounded) until its grant is new."""
        deadline = time.monotonic() + _WAIT_FOR_PEER
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # polling interval of the store, not synchronisation of tests
            stored = await self.grants.load_grant(self.upstream)
            if stored is None:
                return None
            if stored.version != seen and self._usable(stored):
                self._adopt(stored, fresh=False)
                return self._token
        raise TokenRequestFailed(f"upstream {self.upstream!r}: another gateway process is refreshing its token and"
                                 f" did not finish within {_WAIT_FOR_PEER:g}s")

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
