"""Console sessions and CSRF tokens: HMAC-signed cookies, no server-side session table.

One cookie, ``triplock_console`` (HttpOnly, SameSite=Strict, Path=/console), carries a random
nonce and, once logged in, the principal id, how it logged in, its roles at login (they decide
which categories of held calls it sees and decides) and an expiry, signed with HMAC-SHA256. Before
login the same cookie carries only a nonce, so the login form is CSRF-protected too.

The CSRF token is a synchronizer token derived from the cookie: ``HMAC(key, nonce)``. A page
embeds it in every form; a POST must bring the cookie *and* the matching token. A cross-site
page can neither read the HttpOnly cookie nor compute the HMAC, and a fresh nonce at login
means a token captured before login is useless afterwards. Nothing is stored server-side, so
any gateway process sharing ``cookie_secret`` can check any session.

A session says what its holder may do: decide held calls (``approves``: logged in with an
approver token) and re-approve changed tool definitions (``pins``: an admin with the ``pin``
action). Separation of duties: one does not imply the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

COOKIE_NAME = "triplock_console"
COOKIE_PATH = "/console"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """What a console cookie says: the nonce, and who is logged in (``approver`` None: nobody)."""

    nonce: str
    approver: str | None = None
    via: str = "token"
    expires_at: float = 0.0
    approves: bool = True  # may see and decide held calls
    pins: bool = False  # may review and approve changed tool definitions
    roles: tuple[str, ...] = ("approver",)  # the approver's roles: which categories it may decide

    @property
    def logged_in(self) -> bool:
        return self.approver is not None


class SessionCodec:
    """Signs and checks console cookies and the CSRF tokens bound to them."""

    def __init__(self, secret: bytes, lifetime: float) -> None:
        # Separate keys per use, so a cookie signature can never double as a CSRF token.
        self._cookie_key = hmac.new(secret, b"triplock-console-cookie", hashlib.sha256).digest()
        self._csrf_key = hmac.new(secret, b"triplock-console-csrf", hashlib.sha256).digest()
        self.lifetime = lifetime

    def anonymous(self) -> ConsoleSession:
        """A fresh pre-login session: a nonce to bind the login form's CSRF token to."""
        return ConsoleSession(nonce=_b64(os.urandom(18)))

    def login(self, approver: str, via: str, now: float | None = None, *, approves: bool = True,
              pins: bool = False, roles: Iterable[str] = ("approver",)) -> ConsoleSession:
        """A new logged-in session; the nonce is new too (no session fixation)."""
        now = time.time() if now is None else now
        return ConsoleSession(nonce=_b64(os.urandom(18)), approver=approver, via=via,
                              expires_at=now + self.lifetime, approves=approves, pins=pins,
                              roles=tuple(sorted(roles)))

    def encode(self, session: ConsoleSession) -> str:
        payload = {"n": session.nonce, "a": session.approver, "v": session.via, "e": session.expires_at,
                   "r": session.approves, "p": session.pins, "ro": list(session.roles)}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        sig = _b64(hmac.new(self._cookie_key, body.encode(), hashlib.sha256).digest())
        return f"v1.{body}.{sig}"

    def decode(self, cookie: str | None, now: float | None = None) -> ConsoleSession | None:
        """The session in a cookie, or None if missing, forged, malformed or expired."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or parts[0] != "v1":
            return None
        expected = _b64(hmac.new(self._cookie_key, parts[1].encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            return None
        try:
            data = json.loads(_unb64(parts[1]))
            # A cookie signed before roles were recorded is an approver token's: the approver role.
            roles = data.get("ro", ["approver"])
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                return None
            session = ConsoleSession(nonce=str(data["n"]), approver=data["a"], via=str(data["v"]),
                                     expires_at=float(data["e"]), approves=data.get("r", True) is True,
                                     pins=data.get("p", False) is True, roles=tuple(roles))
        except (ValueError, KeyError, TypeError):
            return None
        if session.approver is not None:
            now = time.time() if now is None else now
            if not isinstance(session.approver, str) or session.expires_at <= now:
                return None
        return session

    def csrf_token(self, session: ConsoleSession) -> str:
        return _b64(hmac.new(self._csrf_key, session.nonce.encode(), hashlib.sha256).digest())

    def check_csrf(self, session: ConsoleSession | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(self.csrf_token(session), token)
