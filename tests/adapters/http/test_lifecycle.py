"""Triplock's own HTTP server over its life: lifespan, graceful stop, idle connections, worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from adapters.http.limits import Limits
from adapters.http.server import LifespanFailure, Server
from tests.adapters.http.harness import DEADLINE, Raw, Receive, Scope, Send, echo, get, respond, serving
from tests.support import PY, REPO, free_port, gateway_cmd, running, write_config


async def test_lifespan_runs_and_its_state_reaches_requests() -> None:
    calls: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                calls.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["db"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["state"] == {"db": "connected"}
        scope["state"]["db"] = "changed by a request"  # a shallow copy: the next request does not see it
        await respond(send, scope["state"]["db"].encode())

    async with serving(app) as server, httpx.AsyncClient() as client:
        assert calls == ["lifespan.startup"]
        for _ in range(2):
            r = await client.get(f"http://127.0.0.1:{server.port}/")
            assert r.status_code == 200 and r.text == "changed by a request"
        assert server.state == {"db": "connected"}
    assert calls == ["lifespan.startup", "lifespan.shutdown"]


async def test_starlette_app_with_lifespan_state_streaming_and_path_decoding() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        yield {"greeting": "hi"}

    async def hello(request: Request) -> Response:
        return JSONResponse(
            {
                "greeting": request.state.greeting,
                "name": request.path_params["name"],
                "q": request.query_params["q"],
                "client": request.client.host if request.client else None,
                "body": (await request.body()).decode(),
            }
        )

    async def stream(request: Request) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            for i in range(3):
                yield b"part%d\n" % i

        return StreamingResponse(parts(), media_type="text/plain")

    app = Starlette(routes=[Route("/hello/{name}", hello, methods=["POST"]), Route("/s", stream)], lifespan=lifespan)
    async with serving(app) as server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
        r = await client.post("/hello/a%20b", params={"q": "x y"}, content=b"payload")
        assert r.json() == {"greeting": "hi", "name": "a b", "q": "x y", "client": "127.0.0.1", "body": "payload"}
        r = await client.get("/s")
        assert r.text == "part0\npart1\npart2\n" and r.headers["transfer-encoding"] == "chunked"
        assert (await client.get("/missing")).status_code == 404


async def test_lifespan_startup_failure_stops_serve_and_unsupported_lifespan_is_fine() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(LifespanFailure, match="no database"):
        async with serving(failing):
            pass

    async def http_only(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise RuntimeError(f"unsupported scope {scope['type']}")
        await respond(send, b"fine")

    async with serving(http_only) as server, httpx.AsyncClient() as client:
        assert (await client.get(f"http://127.0.0.1:{server.port}/")).text == "fine"


async def test_graceful_stop_closes_idle_connections_and_waits_for_requests_in_flight() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/slow":
            entered.set()
            await release.wait()
        await respond(send, b"done " + scope["path"].encode())

    server = Server(app, host="127.0.0.1", port=0, graceful_timeout=DEADLINE)
    started, stop = asyncio.Event(), asyncio.Event()
    serve = asyncio.create_task(server.serve(started=started, stop=stop))
    await asyncio.wait_for(started.wait(), DEADLINE)
    idle = await Raw.connect(server.port)
    await idle.send(get("/quick"))
    assert (await idle.response())[2] == b"done /quick"
    busy = await Raw.connect(server.port)
    await busy.send(get("/slow"))
    await asyncio.wait_for(entered.wait(), DEADLINE)

    stop.set()
    assert await idle.until_eof() == b""  # closed at once
    with pytest.raises(OSError):
        await Raw.connect(server.port)  # no longer accepting
    assert not serve.done()  # still waiting for /slow
    release.set()
    status, headers, body = await busy.response()
    assert status == 200 and body == b"done /slow" and headers["connection"] == "close"
    await asyncio.wait_for(serve, DEADLINE)


async def test_graceful_stop_cancels_what_outlives_the_timeout() -> None:
    cancelled = asyncio.Event()
    entered = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        entered.set()
        try:
            await asyncio.Event().wait()  # a stream that never ends on its own
        except asyncio.CancelledError:
            cancelled.set()
            raise

    started_at = 0.0
    async with serving(app, graceful_timeout=0.2) as server:
        raw = await Raw.connect(server.port)
        await raw.send(get("/forever"))
        await asyncio.wait_for(entered.wait(), DEADLINE)
        started_at = time.monotonic()
    assert cancelled.is_set() and time.monotonic() - started_at >= 0.15
    assert await raw.until_eof() == b""


async def test_idle_keep_alive_connection_is_closed_after_the_timeout() -> None:
    async with serving(echo, limits=Limits(keepalive_timeout=0.2)) as server:
        raw = await Raw.connect(server.port)
        await raw.send(get("/one"))
        assert (await raw.response())[2] == b"/one"
        idle_since = time.monotonic()
        assert await raw.until_eof() == b""
        assert time.monotonic() - idle_since >= 0.15  # the idle sweep, not a close after the response


def test_workers_serve_requests_through_the_cli(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "gw.toml", port, [], server={"workers": 2}, audit={"path": str(tmp_path / "audit-{pid}.jsonl")}
    )
    with running(gateway_cmd(config), f"http://127.0.0.1:{port}/healthz") as proc:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        commands: list[Any] = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in children]
        assert len(children) == 2 and all(b"adapters.http.workers" in c for c in commands), commands
        for _ in range(10):  # a new connection each time: the kernel spreads them over the workers
            r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=DEADLINE)
            # every worker answers; with no upstream configured none of them is ready (and says why)
            assert r.status_code == 503 and r.json()["status"] == "not ready"
            assert any("no upstreams" in p for p in r.json()["problems"]), r.json()
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    assert proc.returncode == 0, out[-3000:]  # SIGTERM to the group: every worker stopped gracefully


def test_supervisor_exits_non_zero_when_workers_cannot_start() -> None:
    code = (
        "import sys; from adapters.http.workers import supervise; "
        "sys.exit(supervise('no_such_module:app', host='127.0.0.1', port=0, workers=2))"
    )
    done = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert done.returncode == 1 and b"failed to start" in done.stderr, done.stderr


def test_a_serving_process_settles_its_heap_once_started() -> None:
    # In a child process: freezing the heap of the test process itself would keep every test's garbage.
    script = """
import asyncio, gc, sys
from adapters.http.server import YOUNG_GC_THRESHOLD, Server
from tests.adapters.http.harness import echo

async def main():
    started, stop = asyncio.Event(), asyncio.Event()
    before = (gc.get_threshold()[0], gc.get_freeze_count())
    server = Server(echo, port=0, settle=True)
    task = asyncio.create_task(server.serve(started=started, stop=stop))
    await started.wait()
    after = (gc.get_threshold()[0], gc.get_freeze_count())
    stop.set()
    await task
    plain = Server(echo, port=0)  # the default (tests, embedding) leaves the collector alone
    started, stop = asyncio.Event(), asyncio.Event()
    gc.unfreeze(); gc.set_threshold(700)
    task = asyncio.create_task(plain.serve(started=started, stop=stop))
    await started.wait()
    untouched = (gc.get_threshold()[0], gc.get_freeze_count())
    stop.set()
    await task
    print(before[0], before[1] == 0, after[0] == YOUNG_GC_THRESHOLD, after[1] > 10_000, untouched)

asyncio.run(main())
"""
    out = subprocess.run([PY, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["700", "True", "True", "True", "(700,", "0)"]
