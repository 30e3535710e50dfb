"""The RFC 9112 rules the parser (httptools) does not enforce itself, and the server's own refusals.

httptools (llhttp, strict mode) already answers most request-smuggling shapes with a parse
error: Content-Length together with Transfer-Encoding, duplicate or malformed
Content-Length, obsolete line folding, whitespace before a header's colon, bare CR or LF,
bad chunk sizes. What it lets through is checked here: the Host header count (RFC 9112
§3.2), Transfer-Encoding in HTTP/1.0 and transfer codings other than ``chunked`` (§6.1).
"""

from __future__ import annotations

from typing import Any

from adapters.http.cycle import plain_response


class Refuse(Exception):
    """Raised inside a parser callback: answer ``response`` (counted under ``reason``) and close."""

    def __init__(self, reason: str, response: bytes) -> None:
        super().__init__(reason)
        self.reason, self.response = reason, response


TOO_LARGE = ("header_too_large", plain_response(431, "Request Header Fields Too Large\n"))
OVERLOADED = plain_response(503, "Service Unavailable: too many connections\n").replace(
    b"connection: close\r\n", b"connection: close\r\nretry-after: 1\r\n"
)


def bad_request(why: str) -> tuple[str, bytes]:
    """A 400 refusal that says ``why``."""
    return "bad_request", plain_response(400, f"Bad Request: {why}\n")


def request_timeout(part: str) -> tuple[str, bytes]:
    """The 408 refusal for a request ``part`` (``header`` or ``body``) that took too long."""
    return f"{part}_timeout", plain_response(408, f"Request Timeout: the request {part} took too long\n")


def check_transfer_coding(scope: dict[str, Any]) -> None:
    """Raise :class:`Refuse` unless the request's only transfer coding is ``chunked`` in HTTP/1.1."""
    if scope["http_version"] == "1.0":
        # §6.1: Transfer-Encoding in an HTTP/1.0 message means its framing cannot be trusted.
        raise Refuse(*bad_request("Transfer-Encoding in HTTP/1.0"))
    codings = b",".join(v for n, v in scope["headers"] if n == b"transfer-encoding").split(b",")
    if [c.strip().lower() for c in codings] != [b"chunked"]:
        # §6.1: a transfer coding the server does not understand gets 501 (the app would get encoded bytes).
        raise Refuse("bad_request", plain_response(501, "Not Implemented: only the chunked transfer coding\n"))
