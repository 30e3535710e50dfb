"""The errors of Triplock's upstream credentials, apart so every credential module can raise them."""

from __future__ import annotations


class UpstreamAuthError(Exception):
    """The upstream's token endpoint refused or could not be reached (no secret in the message)."""


class NeedsSignIn(UpstreamAuthError):
    """The upstream has no usable grant: an admin must sign in (the message says how)."""


class TokenRequestFailed(UpstreamAuthError):
    """The token endpoint refused or could not be reached; ``error`` is its OAuth error code, if any."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error
