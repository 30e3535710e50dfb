"""A real, throw-away `redis-server` on a free loopback port, for any test that needs Redis.

    from tests.redis_server import redis_server
    with redis_server() as url:      # 'redis://127.0.0.1:<port>/0'
        ...

The server runs in a temporary directory with persistence off unless `appendonly=True`; it is
stopped (and the directory removed) when the block exits.

    from tests.redis_server import redis_cluster
    with redis_cluster() as cluster:  # cluster.url: 'redis+cluster://127.0.0.1:<p1>,...'
        ...

A real Redis Cluster: three `redis-server --cluster-enabled yes` primaries on loopback (data and
cluster-bus ports both free ports), joined by `redis-cli --cluster create`, with every slot served.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


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
        stop_processes([proc])
        shutil.rmtree(workdir, ignore_errors=True)


def stop_processes(procs: list[subprocess.Popen[bytes]] | tuple[subprocess.Popen[bytes], ...]) -> None:
    """SIGTERM every process, then wait for each (SIGKILL after 10 s) and close its output pipe."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def _ask(port: int, command: bytes) -> bytes:
    """One inline command to 127.0.0.1:port; the raw reply (enough for short status replies)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
        s.sendall(command + b"\r\n")
        return s.recv(65536)


@dataclass(frozen=True)
class Cluster:
    """A running test cluster: its nodes' ports, its URL for the store, and a way to stop one node."""

    ports: tuple[int, ...]
    procs: tuple[subprocess.Popen[bytes], ...]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def slot_owner(self, key: str) -> int:
        """The port of the node that serves ``key``'s slot (from CLUSTER KEYSLOT and CLUSTER SLOTS)."""
        import redis

        client = redis.Redis(port=self.ports[0], decode_responses=True)
        try:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(primary[1])
        finally:
            client.close()
        raise LookupError(f"no node serves slot {slot}")


@contextlib.contextmanager
def redis_cluster(nodes: int = 3, deadline: float = 20.0) -> Iterator[Cluster]:
    """Start a ``nodes``-primary Redis Cluster on loopback (no replicas), yield it, stop it afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="triplock-cluster-"))
    ports = tuple(free_port() for _ in range(nodes))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = workdir / str(port)
            node_dir.mkdir()
            procs.append(subprocess.Popen(
                [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir), "--save", "",
                 "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no",
                 "--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                 "--cluster-port", str(free_port()), "--cluster-node-timeout", "2000", "--loglevel", "warning"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        end = time.monotonic() + deadline
        for port, proc in zip(ports, procs, strict=True):
            while not _answers_ping(port):
                if proc.poll() is not None:
                    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                    raise RuntimeError(f"cluster node {port} exited with {proc.returncode}:\n{out[-2000:]}")
                if time.monotonic() > end:
                    raise TimeoutError(f"cluster node {port} not ready after {deadline}s")
                time.sleep(0.02)  # readiness polling interval; the loop checks the node each round
        create = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports), "--cluster-replicas", "0",
             "--cluster-yes"], capture_output=True, timeout=deadline)
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout.decode(errors='replace')[-2000:]}")
        for port in ports:  # every node must see every slot served before a client may rely on the map
            while b"cluster_state:ok" not in _ask(port, b"CLUSTER INFO"):
                if time.monotonic() > end:
                    raise TimeoutError(f"cluster node {port}: cluster_state not ok after {deadline}s")
                time.sleep(0.05)  # polling interval while the nodes agree on the slot map
        yield Cluster(ports, tuple(procs))
    finally:
        stop_processes(procs)
        shutil.rmtree(workdir, ignore_errors=True)
