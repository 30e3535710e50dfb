"""The 2026-07-28 wire toward HTTP upstreams that speak it, and remembering which era each speaks.

A 2026-07-28 request is self-contained: no ``initialize``, no ``Mcp-Session-Id``; every request
carries the ``_meta`` envelope (protocol version, client capabilities, client info) and the
headers ``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name`` (``tools/call``, ``prompts/get``,
``resources/read``) and ``Mcp-Param-*`` (the ``tools/call`` arguments the tool's input schema
marks with ``x-mcp-header``), header values encoded as the SDK's codec does (base64-wrapped when
not plain ASCII). ``ping`` was removed: a health ping becomes ``server/discover``. The wire has
no client-to-server notifications (closing the response stream is the cancellation) and no
server-to-client requests (an upstream that needs input answers ``input_required``).

Which era an upstream speaks (:class:`EraMemory`): ``upstreams[].protocol`` pins one; ``auto``
(the default) probes ``server/discover`` once, as the SDK clients do, and tries ``initialize``
as before. An upstream that takes ``initialize`` gets the handshake era from everyone: its tools
may ask their client mid-call (which the 2026-07-28 wire cannot carry), and the gateway already
turns such requests into input-required results for 2026-07-28 clients. One that refuses
``initialize`` but answers ``server/discover`` speaks only 2026-07-28 and gets it from everyone.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp_types import CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, PROTOCOL_VERSION_META_KEY
from mcp_types.jsonrpc import UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from adapters.upstreams.trace_headers import trace_headers
from gateway.config import UpstreamConfig
from gateway.ports.upstream import ClientIdentity, MessageHandler, UpstreamError, UpstreamSession

log = logging.getLogger("triplock.upstream.http")

MODERN_VERSION = "2026-07-28"
HANDSHAKE_VERSION = "2025-11-25"

ParamMap = dict[tuple[str, ...], str]


class Wire(Protocol):
    """One HTTP exchange with the upstream (``streamable_http.HttpUpstreamSession.post``)."""

    async def post(self, message: dict[str, Any], on_message: MessageHandler | None, timeout: float,
                   extra_headers: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]: ...

    async def aclose(self) -> None: ...


class Connector(Protocol):
    """What the 2026-07-28 wire needs of its upstream's connector (``streamable_http.HttpUpstream``)."""

    name: str
    config: UpstreamConfig
    era: EraMemory

    def named(self, principal: str | None) -> dict[str, str]: ...

    def wire(self, headers: dict[str, str]) -> Wire: ...


def envelope(message: dict[str, Any], identity: ClientIdentity) -> dict[str, Any]:
    """``message`` with the per-request ``_meta`` envelope (capabilities a caller put there are kept)."""
    params = message.get("params")
    params = dict(params) if isinstance(params, dict) else {}
    meta = params.get("_meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta[PROTOCOL_VERSION_META_KEY] = MODERN_VERSION
    meta.setdefault(CLIENT_CAPABILITIES_META_KEY, identity.capabilities)
    meta.setdefault(CLIENT_INFO_META_KEY, identity.client_info)
    params["_meta"] = meta
    return {**message, "params": params}


def routing_headers(method: str, params: dict[str, Any], param_map: ParamMap | None) -> dict[str, str]:
    """``Mcp-Method``, ``Mcp-Name`` and ``Mcp-Param-*`` for one request, exactly as the SDK client sends them."""
    headers = {MCP_METHOD_HEADER: method}
    key = NAME_BEARING_METHODS.get(method)
    if key is not None and isinstance(name := params.get(key), str):
        headers[MCP_NAME_HEADER] = encode_header_value(name)
    if method == "tools/call" and param_map:
        arguments = params.get("arguments")
        headers.update(mcp_param_headers(param_map, arguments if isinstance(arguments, dict) else {}))
    return headers


class EraMemory:
    """What one upstream was found to speak (None: not known yet), per ``upstreams[].protocol``."""

    def __init__(self, setting: str) -> None:
        self.setting = setting
        self.modern: bool | None = {"2026-07-28": True, "2025-11-25": False}.get(setting)
        self.handshake: bool | None = {"2026-07-28": False, "2025-11-25": True}.get(setting)
        self.discover_result: dict[str, Any] = {}
        self.param_maps: dict[str, ParamMap] = {}  # tool -> its x-mcp-header map (for Mcp-Param-*)
        self.invalid_header_tools: set[str] = set()  # listed with an invalid x-mcp-header: never called
        self._probing = asyncio.Lock()

    @staticmethod
    async def nowhere(_message: dict[str, Any]) -> None:
        """Where a bare exchange's server messages would go: the 2026-07-28 wire sends none outside a response."""
        return None

    @property
    def modern_only(self) -> bool:
        return self.modern is True and self.handshake is False

    def describe(self) -> str:
        """The era(s) in use, for health and logs."""
        eras = [v for v, ok in ((HANDSHAKE_VERSION, self.handshake), (MODERN_VERSION, self.modern)) if ok]
        return " and ".join(eras) if eras else "unknown"

    async def probe(self, connector: Connector) -> None:
        """Ask ``server/discover`` once (``auto``, or ``2026-07-28`` for the server's capabilities).

        ``auto``: anything but a 2026-07-28 answer means the upstream does not speak it. A network
        failure is no verdict: it propagates (the pool retries the connect) and the next connect
        probes again. ``2026-07-28``: a refusal fails the connect, naming what the server said.
        """
        if self.modern is False or self.discover_result:
            return
        async with self._probing:
            if self.modern is False or self.discover_result:
                return
            session = ModernHttpUpstreamSession(connector, {}, ClientIdentity())
            try:
                result = await session.discover(connector.config.connect_timeout)
            except UpstreamError as exc:
                if exc.kind in ("unreachable", "timeout") or self.setting == MODERN_VERSION:
                    raise
                self.modern = False
                return
            supported = result.get("supportedVersions")
            speaks = isinstance(supported, list) and MODERN_VERSION in supported
            if not speaks and self.setting == MODERN_VERSION:
                raise UpstreamError(connector.name, "protocol", "upstreams[].protocol is 2026-07-28, but its"
                                    f" server/discover lists supportedVersions {supported!r}")
            self.modern = speaks
            if speaks:
                self.discover_result = result
            log.info("upstream %s %s 2026-07-28 (server/discover)", connector.name,
                     "speaks" if speaks else "does not speak")

    def refused_handshake(self, exc: UpstreamError) -> bool:
        """``initialize`` was refused: if the upstream speaks 2026-07-28, it speaks only that (True)."""
        if self.setting != "auto" or self.modern is not True or exc.kind in ("unreachable", "timeout"):
            return False
        self.handshake = False
        return True

    def forget(self) -> None:
        """An answer contradicted what was remembered (-32022): probe again on the next connect."""
        if self.setting == "auto":
            self.modern = self.handshake = None
            self.discover_result = {}


async def open_in_era(connector: Connector, identity: ClientIdentity,
                      handshake: Callable[[dict[str, str]], Awaitable[UpstreamSession]]) -> UpstreamSession:
    """A session with ``connector``'s upstream in the era it speaks: the handshake era where it can.

    ``handshake(headers)`` runs ``initialize``; when that is refused by an upstream that answered
    ``server/discover`` (``auto``), the upstream speaks only 2026-07-28, which is remembered.
    """
    named = connector.named(identity.principal)
    await connector.era.probe(connector)
    if connector.era.modern_only:
        return ModernHttpUpstreamSession(connector, named, identity)
    try:
        session = await handshake(named)
    except UpstreamError as exc:
        if not connector.era.refused_handshake(exc):
            raise
        return ModernHttpUpstreamSession(connector, named, identity)
    connector.era.handshake = True
    return session


class ModernHttpUpstreamSession:
    """Requests to one upstream on the 2026-07-28 wire (stateless: nothing to open or close upstream)."""

    era = MODERN_VERSION

    def __init__(self, connector: Connector, extra_headers: dict[str, str], identity: ClientIdentity) -> None:
        self.upstream = connector.name
        self._connector = connector
        self._wire = connector.wire({**extra_headers, "mcp-protocol-version": MODERN_VERSION})
        self._identity = identity
        self._ids = itertools.count(1)
        self._closed = False
        self._memory = connector.era
        result = self._memory.discover_result
        self.initialize_result = {
            "protocolVersion": MODERN_VERSION,
            "capabilities": result.get("capabilities") or {},
            "serverInfo": (result.get("_meta") or {}).get("io.modelcontextprotocol/serverInfo") or {},
            **({"instructions": result["instructions"]} if isinstance(result.get("instructions"), str) else {}),
        }

    async def discover(self, timeout: float) -> dict[str, Any]:
        """``server/discover``: its result, or UpstreamError (a JSON-RPC error or a refusal)."""
        reply = await self.request({"jsonrpc": "2.0", "id": 0, "method": "server/discover"}, on_message=None,
                                   timeout=timeout)
        if "error" in reply:
            raise UpstreamError(self.upstream, "protocol", f"server/discover refused: {reply['error']}")
        result = reply.get("result")
        if not isinstance(result, dict):
            raise UpstreamError(self.upstream, "protocol", "server/discover answered without a result object")
        return result

    async def request(self, message: dict[str, Any], *, on_message: MessageHandler | None, timeout: float,
                      principal: str | None = None) -> dict[str, Any]:
        """One self-contained request: envelope, routing headers, the answer with the caller's id."""
        method = str(message.get("method"))
        if method == "ping":  # removed in 2026-07-28; server/discover is the cheap liveness question
            await self.discover(timeout)
            return {"jsonrpc": "2.0", "id": message.get("id"), "result": {}}
        outbound = envelope({**message, "id": next(self._ids)}, self._identity)
        params = outbound["params"]
        if method == "tools/call" and isinstance(params.get("name"), str):
            param_map = await self._param_map(params["name"], timeout)
        else:
            param_map = None
        extra = routing_headers(method, params, param_map)
        if (trace := trace_headers(message)) is not None:
            extra.update(trace)
        if principal is not None and (named := self._connector.named(principal)):
            extra.update(named)
        response, _ = await self._wire.post(outbound, on_message, timeout, extra)
        response["id"] = message.get("id")
        error = response.get("error")
        if isinstance(error, dict) and error.get("code") == UNSUPPORTED_PROTOCOL_VERSION:
            self._memory.forget()
        elif method == "tools/list" and isinstance(result := response.get("result"), dict):
            self._absorb_tools(result)
        return response

    async def _param_map(self, tool: str, timeout: float) -> ParamMap | None:
        """The tool's ``x-mcp-header`` map, listing the tools on this wire first if it was never seen here."""
        maps = self._memory.param_maps
        if tool not in maps:
            cursor: Any = None
            for _ in range(100):  # a cursor that never ends must not hang the call
                params = {"cursor": cursor} if cursor else {}
                page = await self.request({"jsonrpc": "2.0", "id": 0, "method": "tools/list", "params": params},
                                          on_message=None, timeout=timeout)
                result = page.get("result")
                cursor = result.get("nextCursor") if isinstance(result, dict) else None
                if not cursor:
                    break
        if tool in self._memory.invalid_header_tools:
            raise UpstreamError(self.upstream, "protocol", f"its tool {tool!r} declares an invalid x-mcp-header,"
                                " so 2026-07-28 clients must not call it")
        return maps.get(tool)

    def _absorb_tools(self, result: dict[str, Any]) -> None:
        """Drop tools whose ``x-mcp-header`` is invalid (a 2026-07-28 MUST); remember the others' maps."""
        tools = result.get("tools")
        if not isinstance(tools, list):
            return
        kept = []
        for tool in tools:
            if not isinstance(tool, dict) or not isinstance(name := tool.get("name"), str):
                continue
            reason = find_invalid_x_mcp_header(tool.get("inputSchema"))
            if reason is not None:
                log.warning("upstream %s: leaving out tool %r: invalid x-mcp-header (%s)", self.upstream, name, reason)
                self._memory.invalid_header_tools.add(name)
                self._memory.param_maps.pop(name, None)
                continue
            self._memory.invalid_header_tools.discard(name)
            self._memory.param_maps[name] = x_mcp_header_map(tool.get("inputSchema"))
            kept.append(tool)
        result["tools"] = kept

    @property
    def closed(self) -> bool:
        return self._closed

    async def notify(self, message: dict[str, Any]) -> None:
        """Nothing: the wire has no client-to-server notifications (a cancellation is the closed stream)."""
        return None

    async def send_response(self, message: dict[str, Any]) -> None:
        """Nothing: a 2026-07-28 upstream sends no requests to answer (it answers ``input_required``)."""
        return None

    async def aclose(self) -> None:
        self._closed = True  # no session upstream, no GET stream: nothing to tell it
        await self._wire.aclose()


def speaks_modern(version: object) -> bool:
    """True for a protocol version of the stateless era."""
    return version in MODERN_PROTOCOL_VERSIONS
