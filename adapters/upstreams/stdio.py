"""Upstream MCP servers over stdio: one child process, newline-delimited JSON-RPC.

A stdio server is one MCP session by nature, so all downstream sessions share
the process. Request ids and progress tokens are rewritten to gateway-unique
values so answers and progress reach the caller they belong to; a request the
server sends on its own (sampling, elicitation) goes to the most recent caller
still waiting, else to the session-level handler.

A line over ``max_response_bytes`` is not buffered: the gateway reads on to the next newline,
dropping the bytes, so the stream resynchronises and the process keeps running. The call it
answered fails naming the limit (the one whose id opens the line, as serializers write
``{"jsonrpc", "id", "result"...}``; when the id cannot be read there, every call waiting).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import re
from collections.abc import Callable
from typing import Any

import orjson

from adapters.upstreams.deadlines import deadline
from gateway.config import UpstreamConfig
from gateway.ports.upstream import (
    HANDSHAKE_ERA,
    UPSTREAM_PROTOCOL_VERSION,
    ClientIdentity,
    MessageHandler,
    UpstreamError,
)

log = logging.getLogger("triplock.upstream.stdio")

# The start of a response line: which call an oversized answer belonged to.
_RESPONSE_HEAD = re.compile(rb'\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(\d{1,18})\s*,\s*"(?:result|error)"')


class StdioUpstream:
    """Connector for one stdio upstream: starts the process on first use and shares it."""

    def __init__(self, config: UpstreamConfig, on_limit: Callable[[str, str], None] | None = None) -> None:
        self.name = config.name
        self.config = config
        self.on_limit = on_limit  # told (limit, upstream) when a line is over max_response_bytes
        self._session: StdioUpstreamSession | None = None
        self._lock = asyncio.Lock()

    async def open_session(self, identity: ClientIdentity, on_server_message: MessageHandler) -> StdioUpstreamSession:
        """Return the live shared session, starting (or restarting) the process if needed."""
        async with self._lock:
            if self._session is None or self._session.closed:
                session = StdioUpstreamSession(self.config, on_server_message, self.on_limit)
                await session.start(identity)
                self._session = session
            return self._session

    async def aclose(self) -> None:
        if self._session:
            await self._session.aclose()


class StdioUpstreamSession:
    """The MCP session with one child process."""

    era = HANDSHAKE_ERA  # stdio has no 2026-07-28 wire here: initialize, then one session per process

    def __init__(
        self,
        config: UpstreamConfig,
        on_server_message: MessageHandler,
        on_limit: Callable[[str, str], None] | None = None,
    ) -> None:
        self.upstream = config.name
        self._config = config
        self._on_limit = on_limit
        self._on_server_message = on_server_message
        self._proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[asyncio.Future[dict[str, Any]], MessageHandler | None]] = {}
        self._progress: dict[str, MessageHandler] = {}
        self._progress_original: dict[str, Any] = {}
        self._write_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._stderr: asyncio.Task[None] | None = None
        self._closed = False
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=5)
        self.initialize_result: dict[str, Any] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self, identity: ClientIdentity) -> None:
        cfg = self._config
        assert cfg.command is not None
        env = {**os.environ, **cfg.env}
        try:
            self._proc = await asyncio.create_subprocess_exec(
                cfg.command,
                *cfg.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=str(cfg.cwd) if cfg.cwd else None,
                limit=cfg.max_response_bytes,
            )
        except OSError as exc:
            self._closed = True
            raise UpstreamError(self.upstream, "unreachable", f"cannot start {cfg.command!r}: {exc}") from None
        self._reader = asyncio.create_task(self._read_loop(), name=f"stdio-reader:{self.upstream}")
        self._stderr = asyncio.create_task(self._drain_stderr(), name=f"stdio-stderr:{self.upstream}")
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": UPSTREAM_PROTOCOL_VERSION,
                "capabilities": identity.capabilities,
                "clientInfo": identity.client_info,
            },
        }
        try:
            reply = await self.request(init, on_message=None, timeout=cfg.connect_timeout)
        except UpstreamError:
            await self.aclose()
            raise
        if not isinstance(reply.get("result"), dict):
            await self.aclose()
            raise UpstreamError(self.upstream, "protocol", f"initialize refused: {reply.get('error')}")
        self.initialize_result = reply["result"]
        await self.notify({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def request(
        self,
        message: dict[str, Any],
        *,
        on_message: MessageHandler | None,
        timeout: float,
        principal: str | None = None,  # stdio has no identity header
    ) -> dict[str, Any]:
        if self._closed:
            raise UpstreamError(self.upstream, "closed", "process is not running")
        caller_id = message.get("id")
        wire_id = next(self._ids)
        outbound: dict[str, Any] = {**message, "id": wire_id}
        token = self._rewrite_progress_token(outbound, wire_id, on_message)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[wire_id] = (future, on_message)
        try:
            await self._write(outbound)
            async with deadline(timeout):
                reply = await future
        except TimeoutError:
            await self._write_quiet(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": wire_id, "reason": "timeout"},
                }
            )
            raise UpstreamError(self.upstream, "timeout", f"no answer within {timeout:g}s") from None
        finally:
            self._waiting.pop(wire_id, None)
            if token is not None:
                self._progress.pop(token, None)
                self._progress_original.pop(token, None)
        reply["id"] = caller_id
        return reply

    def _rewrite_progress_token(
        self, outbound: dict[str, Any], wire_id: int, on_message: MessageHandler | None
    ) -> str | None:
        params = outbound.get("params")
        meta = params.get("_meta") if isinstance(params, dict) else None
        if not isinstance(meta, dict) or "progressToken" not in meta or on_message is None:
            return None
        token = f"tl-{wire_id}"
        self._progress[token] = on_message
        self._progress_original[token] = meta["progressToken"]
        outbound["params"] = {**params, "_meta": {**meta, "progressToken": token}}  # type: ignore[dict-item]
        return token

    async def notify(self, message: dict[str, Any]) -> None:
        await self._write_quiet(message)

    async def send_response(self, message: dict[str, Any]) -> None:
        await self._write_quiet(message)

    async def aclose(self) -> None:
        if self._closed and self._proc is None:
            return
        self._closed = True
        proc, self._proc = self._proc, None
        if proc and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(3):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for task in (self._reader, self._stderr):
            if task and task is not asyncio.current_task():
                task.cancel()
        self._fail_waiting("process stopped")

    async def _write(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or self._closed:
            raise UpstreamError(self.upstream, "closed", "process is not running")
        async with self._write_lock:
            try:
                proc.stdin.write(orjson.dumps(message) + b"\n")
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                raise UpstreamError(self.upstream, "closed", "process closed its input") from None

    async def _write_quiet(self, message: dict[str, Any]) -> None:
        try:
            await self._write(message)
        except UpstreamError as exc:
            log.warning("%s", exc)

    def _fail_waiting(self, why: str) -> None:
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(UpstreamError(self.upstream, "closed", why))

    async def _read_loop(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        try:
            while True:
                try:
                    line = await stdout.readuntil(b"\n")
                except asyncio.IncompleteReadError as exc:  # end of output
                    line = exc.partial
                except asyncio.LimitOverrunError as exc:
                    await self._skip_long_line(stdout, exc.consumed)
                    continue
                if not line:
                    break
                if not line.strip():
                    continue
                try:
                    msg = orjson.loads(line)
                except orjson.JSONDecodeError:
                    log.warning("upstream %s wrote a non-JSON line to stdout; ignored", self.upstream)
                    continue
                if isinstance(msg, dict):
                    await self._dispatch(msg)
        finally:
            self._closed = True
            self._fail_waiting("process exited")
            tail = " | ".join(self._stderr_tail)
            log.warning("upstream %s: process exited%s", self.upstream, f"; last stderr: {tail}" if tail else "")

    async def _skip_long_line(self, stdout: asyncio.StreamReader, buffered: int) -> None:
        """Drop a line over the limit up to its newline, and fail the call(s) it may answer."""
        limit = self._config.max_response_bytes
        head = await stdout.readexactly(min(buffered, 256))
        buffered -= len(head)
        while True:
            if buffered:
                await stdout.readexactly(buffered)
            try:
                await stdout.readuntil(b"\n")
                break
            except asyncio.LimitOverrunError as exc:
                buffered = exc.consumed
            except asyncio.IncompleteReadError:
                break  # the process ended mid-line; the read loop sees the end
        log.error("upstream %s sent a message over %d bytes (upstreams[].max_response_bytes); dropped",
                  self.upstream, limit)
        if self._on_limit is not None:
            self._on_limit("stdio_line_bytes", self.upstream)
        error = UpstreamError(
            self.upstream, "protocol", f"it sent a message over {limit} bytes (limit stdio_line_bytes, set by"
            " upstreams[].max_response_bytes); the gateway dropped it"
        )
        match = _RESPONSE_HEAD.match(head)
        entry = self._waiting.get(int(match[1])) if match else None
        targets = [entry] if entry is not None else list(self._waiting.values())
        for future, _ in targets:
            if not future.done():
                future.set_exception(error)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if "method" not in msg:
            rid = msg.get("id")
            entry = self._waiting.get(rid) if isinstance(rid, int) else None
            if entry and not entry[0].done():
                entry[0].set_result(msg)
            return
        if msg["method"] == "notifications/progress":
            params = msg.get("params") or {}
            token = params.get("progressToken")
            handler = self._progress.get(token) if isinstance(token, str) else None
            if handler is not None and isinstance(token, str):
                original = self._progress_original[token]
                await handler({**msg, "params": {**params, "progressToken": original}})
                return
        if str(msg["method"]).endswith("/list_changed"):
            await self._on_server_message(msg)  # the catalog's business, whoever is waiting
            return
        # Anything else: the most recent caller still waiting, else the session's owner.
        for _, on_message in reversed(list(self._waiting.values())):
            if on_message is not None:
                await on_message(msg)
                return
        await self._on_server_message(msg)

    async def _drain_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        while line := await self._proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self._stderr_tail.append(text)
            log.debug("upstream %s stderr: %s", self.upstream, text)
