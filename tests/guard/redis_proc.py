"""A real `redis-server` a test can stop, restart on the same port (its data kept) and freeze.

`tests.redis_server.redis_server()` hands out a URL only; outage tests need the process:

    with RedisProcess() as redis:     # redis.url
        redis.stop(); redis.start()    # down, then back on the same port with its append-only file
        redis.freeze(); redis.thaw()   # SIGSTOP / SIGCONT: connections stay open, nothing answers
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from types import TracebackType

from tests.redis_server import REDIS_SERVER, _answers_ping
from tests.support import free_port


class RedisProcess:
    """One redis-server on 127.0.0.1 with appendonly (fsync always), so a restart loses nothing."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="triplock-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self, deadline: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + deadline
        while not _answers_ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.02)  # readiness polling interval; the server is checked each round

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def __enter__(self) -> RedisProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
