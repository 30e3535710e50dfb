"""What the CLI's REST subcommands share: the common options, the bearer token from an environment
variable (never the command line), one request with errors as exit codes.

Exit codes: 0 done; 1 the gateway refused (4xx/5xx); 2 usage or missing token; 3 unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TOKEN_ENV = "TRIPLOCK_TOKEN"


class CliError(Exception):
    """A failure to report on stderr with an exit code (``data``: the gateway's JSON answer, if any)."""

    def __init__(self, message: str, code: int, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.data = data


def common_options(token_env: str = DEFAULT_TOKEN_ENV, token_help: str | None = None) -> argparse.ArgumentParser:
    """``--url``, ``--token-env``, ``--json`` and ``--timeout``, as a parent parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=os.environ.get("TRIPLOCK_URL", DEFAULT_URL),
                        help=f"gateway base URL (default {DEFAULT_URL}, or $TRIPLOCK_URL)")
    common.add_argument("--token-env", default=token_env,
                        help=token_help or f"env var holding your token (default {token_env})")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    common.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in seconds")
    return common


def request(args: argparse.Namespace, method: str, path: str, needs: str, **kwargs: Any) -> Any:
    """One request to the gateway with the token in ``args.token_env``; the JSON answer, or CliError.
    ``needs`` names what the token's holder must be allowed (for the error message)."""
    token = os.environ.get(args.token_env, "").strip()
    if not token:
        raise CliError(f"set ${args.token_env} to the token of a principal with {needs} "
                       "(or choose another variable with --token-env)", 2)
    return send(args, method, path, token, **kwargs)


def send(args: argparse.Namespace, method: str, path: str, token: str, **kwargs: Any) -> Any:
    """One request to ``args.url`` + ``path`` with ``token``; the JSON answer, or CliError."""
    try:
        response = httpx.request(method, args.url.rstrip("/") + path, timeout=args.timeout,
                                 headers={"Authorization": f"Bearer {token}"}, **kwargs)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the gateway at {args.url}: {exc}", 3) from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.is_success:
        return data
    detail = None
    if isinstance(data, dict):
        detail = data.get("message") or data.get("error_description") or data.get("error")
    raise CliError(f"HTTP {response.status_code}: {detail or response.text.strip()[:200] or response.reason_phrase}",
                   1, data)


def reporting(prog: str, func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``func`` with CliError printed as ``prog: message`` on stderr and returned as its exit code."""
    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except CliError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return exc.code

    run.__doc__ = func.__doc__
    return run
