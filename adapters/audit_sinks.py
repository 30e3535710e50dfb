"""Audit sinks: rotating local JSONL files (the default), stdout, a Redis stream.

Each implements :class:`gateway.ports.audit_sink.AuditSink`: ``write`` delivers a batch of complete
lines or raises, and the audit log retries. Blocking file I/O runs in a worker thread so
a slow or full disk never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from gateway.config import AuditConfig
from gateway.ports.audit_sink import AuditSink

log = logging.getLogger("triplock.audit.sinks")


def _hash_of(line: bytes) -> str | None:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    value = record.get("hash") if isinstance(record, dict) else None
    return value if isinstance(value, str) else None


class FileSink:
    """Appends to ``path``; past ``max_bytes`` the file is renamed with a UTC timestamp and a new one starts.

    Rotated files are never rewritten (ship them to immutable storage). A batch that
    fails half-way (ENOSPC) is cut back off the file, so the file never holds a partial
    line and the retried batch starts clean.
    """

    def __init__(self, path: Path, max_bytes: int = 100 * 1024 * 1024, fsync: bool = False) -> None:
        self.name = "file"
        self.path = Path(str(path).replace("{pid}", str(os.getpid())))
        self.max_bytes = max_bytes
        self.fsync = fsync
        self._file: Any = None

    async def tail_hash(self) -> str | None:
        return await asyncio.to_thread(self._tail_hash)

    def _tail_hash(self) -> str | None:
        if not self.path.is_file():
            return None
        with open(self.path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return None
            f.seek(max(0, size - 65536))
            tail = f.read()
            if not tail.endswith(b"\n"):
                # A crash mid-write left a partial record: cut it, so the file stays valid JSONL.
                cut = tail.rfind(b"\n") + 1
                f.truncate(size - (len(tail) - cut))
                log.warning("audit file %s ended in a partial record (crash?); removed %d bytes",
                            self.path, len(tail) - cut)
                tail = tail[:cut]
            lines = tail.splitlines()
            return _hash_of(lines[-1]) if lines else None

    async def write(self, lines: list[bytes]) -> None:
        await asyncio.to_thread(self._write, b"".join(lines))

    def _write(self, data: bytes) -> None:
        if self._file is None:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across batches
        f = self._file
        pos = f.tell()
        try:
            f.write(data)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        except OSError:
            self._cut_back(pos)
            raise
        if pos + len(data) >= self.max_bytes and self.path.is_file():  # stat only near the limit
            self._rotate()

    def _cut_back(self, pos: int) -> None:
        f, self._file = self._file, None
        with contextlib.suppress(OSError):
            f.close()  # may raise again (buffered bytes); the file is reopened on retry
        if self.path.is_file():
            with contextlib.suppress(OSError):
                os.truncate(self.path, pos)

    def _rotate(self) -> None:
        self._file.close()
        self._file = None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        n = 0  # a counter within the second, so names sort in write order
        while (target := self.path.with_name(f"{self.path.stem}-{stamp}-{n:04d}{self.path.suffix}")).exists():
            n += 1
        os.replace(self.path, target)
        log.info("audit file rotated to %s", target)

    async def aclose(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            await asyncio.to_thread(f.close)


class StdoutSink:
    """One JSON line per event on stdout (for container log collectors)."""

    def __init__(self) -> None:
        self.name = "stdout"

    async def tail_hash(self) -> str | None:
        return None

    async def write(self, lines: list[bytes]) -> None:
        await asyncio.to_thread(self._write, b"".join(lines))

    @staticmethod
    def _write(data: bytes) -> None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()

    async def aclose(self) -> None:
        return None


class RedisStreamSink:
    """``XADD`` each record to a Redis stream (field ``event``); consumers dedupe on ``event_id``."""

    def __init__(self, url: str, stream: str = "triplock:audit") -> None:
        import redis.asyncio as redis

        self.name = "redis"
        self.stream = stream
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)

    async def tail_hash(self) -> str | None:
        last = await self._redis.xrevrange(self.stream, count=1)
        if not last:
            return None
        fields = last[0][1] or {}
        line = fields.get(b"event") or fields.get("event")
        return _hash_of(line if isinstance(line, bytes) else str(line).encode())

    async def write(self, lines: list[bytes]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(self.stream, {"event": line.rstrip(b"\n")})
        await pipe.execute()

    async def aclose(self) -> None:
        await self._redis.aclose()


def build_sinks(config: AuditConfig, store_redis_url: str | None = None) -> list[AuditSink]:
    """The sinks ``[audit]`` asks for, in order (the first that knows its tail anchors the chain)."""
    sinks: list[AuditSink] = []
    for kind in config.sinks:
        if kind == "file":
            sinks.append(FileSink(config.path, config.max_bytes, config.fsync))
        elif kind == "stdout":
            sinks.append(StdoutSink())
        elif kind == "redis":
            url = config.redis_url or store_redis_url
            if not url:
                raise ValueError("audit sink 'redis' needs audit.redis_url (or store.redis_url)")
            sinks.append(RedisStreamSink(url, config.redis_stream))
    if not sinks:
        log.warning("audit log is OFF ([audit] sinks is empty): decisions are not recorded")
    return sinks


__all__ = ["FileSink", "RedisStreamSink", "StdoutSink", "build_sinks"]
