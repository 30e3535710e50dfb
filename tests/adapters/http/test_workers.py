"""`server.workers = 2` through the real CLI: a small supervisor, and connections on both workers.

The supervisor is the `triplock serve` process itself (it replaces its program, keeping its
pid); the workers are its children. Which worker holds which connection is read from the
kernel: the workers' socket inodes (/proc/<pid>/fd) against the established connections on
the gateway's port (/proc/net/tcp).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import httpx

from tests.support import free_port, gateway_cmd, running, write_config

CONNECTIONS = 24  # all on one worker by chance: 2 * 2**-24


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    return inodes


def established_inodes(port: int) -> set[str]:
    """Inodes of the server side of established TCP connections on 127.0.0.1:``port``."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
            out.add(fields[9])
    return out


def test_supervisor_is_smaller_than_a_worker_and_both_workers_serve(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "gw.toml", port, [], server={"workers": 2}, audit={"path": str(tmp_path / "audit-{pid}.jsonl")}
    )
    with running(gateway_cmd(config), f"http://127.0.0.1:{port}/healthz") as proc:
        workers = children(proc.pid)
        assert len(workers) == 2, workers
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) for _ in range(CONNECTIONS)]
        try:
            for client in clients:  # one connection each, kept open: the kernel chose its worker at accept
                r = client.get("/healthz")
                assert (r.status_code, r.json()) == (200, {"status": "ok"})
            established = established_inodes(port)
            held = {pid: len(socket_inodes(pid) & established) for pid in workers}
            assert sum(held.values()) == CONNECTIONS, held
            assert all(n > 0 for n in held.values()), f"a worker got no connection: {held}"
            # Both workers have served; the supervisor, which builds no gateway, stays under half of
            # either (it measured about a quarter; one that built the gateway is as large as a worker).
            sizes = {pid: rss_kb(pid) for pid in [proc.pid, *workers]}
            assert 2 * sizes[proc.pid] < min(sizes[w] for w in workers), sizes
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
            assert cmdline[1:4] == [b"-m", b"adapters.http.workers", b"supervise"], cmdline
        finally:
            for client in clients:
                client.close()
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    assert proc.returncode == 0, out[-3000:]  # SIGTERM: every worker stopped gracefully
    assert f"2 worker processes listening on 127.0.0.1:{port}" in out, out[-3000:]


def test_supervisor_refuses_a_port_another_program_holds(tmp_path: Path) -> None:
    import socket
    import subprocess

    from tests.support import PY, REPO

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path / "gw.toml", port, [], server={"workers": 2}, audit={"path": str(tmp_path / "audit-{pid}.jsonl")}
        )
        done = subprocess.run([PY, "-m", "gateway.cli", "serve", "--config", str(config)], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"cannot serve on 127.0.0.1:{port}: [Errno 98] Address already in use" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
