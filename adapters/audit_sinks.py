"""Audit sinks: rotating local JSONL files (the default), stdout, a Redis stream.

Each implements :class:`gateway.ports.audit_sink.AuditSink`: ``write`` delivers a batch of complete
lines or raises, and the audit log retries. The file sink hands each batch to the kernel with
one ``os.write`` on the event loop (microseconds into the page cache; what a kill -9 of the
process cannot lose) rather than hopping to a thread per batch, which cost more than the
batch; with ``fsync`` on, the write and the fsync (milliseconds) run in a worker thread.
Keep audit files on a local disk: a write that blocks (a hung network file system) would
stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from gateway.config import AuditConfig
from gateway.ports.audit_sink import AuditSink

log = logging.getLogger("triplock.audit.sinks")


def _hash_of(line: bytes) -> str | None:
    return _tail_of(line)[0]


def _tail_of(line: bytes) -> tuple[str | None, str | None]:
    """The ``hash`` and ``event_id`` of a sealed record's line (None where it has none)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(record, dict):
        return None, None
    value, ident = record.get("hash"), record.get("event_id")
    return (value if isinstance(value, str) else None), (ident if isinstance(ident, str) else None)


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
        self._fd: int | None = None
        self._size = 0  # the file's length after our last write (O_APPEND: where the next one lands)
        self.tail_event_id: str | None = None  # the last record's event_id, once tail_hash read it
        # Without fsync a batch is one os.write into the page cache: the audit log may write it at once.
        self.write_now: Callable[[list[bytes]], None] | None = None if fsync else self._write_lines

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
            if not lines:
                return None
            value, self.tail_event_id = _tail_of(lines[-1])
            return value

    async def write(self, lines: list[bytes]) -> None:
        if self.fsync:
            await asyncio.to_thread(self._write, b"".join(lines))
        else:
            self._write(b"".join(lines))

    def _write_lines(self, lines: list[bytes]) -> None:
        self._write(b"".join(lines))

    def _write(self, data: bytes) -> None:
        fd = self._fd
        if fd is None:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
            self._size = os.fstat(fd).st_size
        pos = self._size
        try:
            view = memoryview(data)
            while view:  # a regular file takes it all at once, short of a full disk or a signal
                view = view[os.write(fd, view):]
            if self.fsync:
                os.fsync(fd)
        except OSError:
            self._cut_back(pos)
            raise
        self._size = pos + len(data)
        if self._size >= self.max_bytes and self.path.is_file():
            self._rotate()

    def _cut_back(self, pos: int) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # reopened on retry (the path may have been fixed meanwhile)
        if self.path.is_file():
            with contextlib.suppress(OSError):
                os.truncate(self.path, pos)

    def _rotate(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        n = 0  # a counter within the second, so names sort in write order
        while (target := self.path.with_name(f"{self.path.stem}-{stamp}-{n:04d}{self.path.suffix}")).exists():
            n += 1
        os.replace(self.path, target)
        log.info("audit file rotated to %s", target)

    async def aclose(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class StdoutSink:
    """One JSON line per event on stdout (for container log collectors)."""

    def __init__(self) -> None:
        self.name = "stdout"
        self.write_now: Callable[[list[bytes]], None] | None = None  # a pipe can block: through a thread

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

        from adapters.stores.redis_connect import redis_client

        self.name = "redis"
        self.write_now: Callable[[list[bytes]], None] | None = None
        self.stream = stream
        self.tail_event_id: str | None = None  # the last record's event_id, once tail_hash read it
        # the store's client builder: a Sentinel or Cluster URL works here as it does for the store
        self._redis = redis_client(
            url, max_connections=8, timeout=5, socket_timeout=5, socket_connect_timeout=5)

    async def tail_hash(self) -> str | None:
        last = await self._redis.xrevrange(self.stream, count=1)
        if not last:
            return None
        fields = last[0][1] or {}
        line = fields.get(b"event") or fields.get("event")
        value, self.tail_event_id = _tail_of(line if isinstance(line, bytes) else str(line).encode())
        return value

    async def write(self, lines: list[bytes]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(self.stream, {"event": line.rstrip(b"\n")})
        await pipe.execute()

    async def aclose(self) -> None:
        await self._redis.aclose()  # closes its pool too


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
