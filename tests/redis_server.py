"""A real, throw-away `redis-server` on a free loopback port, for any test that needs Redis.

    from tests.redis_server import redis_server
    with redis_server() as url:      # 'redis://127.0.0.1:<port>/0'
        ...

The server runs in a temporary directory with persistence off unless `appendonly=True`; it is
stopped (and the directory removed) when the block exits.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

from tests.support import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(appendonly: bool = False, deadline: float = 10.0) -> Iterator[str]:
    """Start redis-server on 127.0.0.1:<free port>, yield its URL, stop it afterwards."""
    workdir = tempfile.mkdtemp(prefix="triplock-redis-")
    port = free_port()
    cmd = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "",
           "--appendonly", "yes" if appendonly else "no", "--protected-mode", "yes", "--daemonize", "no"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + deadline
        while not _answers_ping(port):
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise RuntimeError(f"redis-server exited with {proc.returncode}:\n{out[-2000:]}")
            if time.monotonic() > end:
                raise TimeoutError(f"redis-server on port {port} not ready after {deadline}s")
            time.sleep(0.02)  # readiness polling interval; the loop checks the server each round
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        shutil.rmtree(workdir, ignore_errors=True)
