"""The FastMCP proxy peer: run inside its own virtual environment (``load_tests/.peers/fastmcp``).

    load_tests/.peers/fastmcp/bin/python load_tests/fastmcp_proxy.py UPSTREAM_URL PORT

It connects one FastMCP ``Client`` to the upstream over streamable HTTP and keeps it
connected, then builds the proxy from that connected client: FastMCP documents that a proxy
built from an already-connected client reuses that one upstream session for every request
(the default ``ProxyClient`` factory opens a fresh upstream session per request, which costs
an ``initialize`` handshake per call). It serves streamable HTTP on 127.0.0.1:PORT at ``/mcp``.

This file must not import anything from the Triplock repository: it runs with the peer's
interpreter and packages only.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def _create_proxy() -> Any:
    """``fastmcp.server.create_proxy`` (FastMCP 2.14+/3.x) or the older ``FastMCP.as_proxy``."""
    try:
        from fastmcp.server import create_proxy

        return create_proxy
    except ImportError:
        from fastmcp import FastMCP

        return FastMCP.as_proxy


async def serve(upstream_url: str, port: int) -> None:
    """Connect to the upstream once and serve the proxy until killed."""
    from fastmcp import Client
    from fastmcp.client.transports import StreamableHttpTransport

    client: Any = Client(StreamableHttpTransport(upstream_url))
    async with client:  # connected for the proxy's whole life: one shared upstream session
        proxy = _create_proxy()(client, name="bench-fastmcp-proxy")
        await proxy.run_http_async(transport="http", host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    """Entry point: ``UPSTREAM_URL PORT``."""
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))


if __name__ == "__main__":
    main()
