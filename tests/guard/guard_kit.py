"""The guarded path in process, as mitmproxy tests its layers: real parts, no sockets.

`GuardedPath` runs with a real store (`MemoryStore`, `SqliteStore` or `RedisStore`), a real
`PolicyRuntime` loaded from a policy file and real `Approvals`. The upstream is the only stub
(`StubUpstream`, the `forward` coroutine): what it answers is what each test is about.
`FlakyStore` wraps a real store and raises StoreUnavailable on demand, as an outage would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from gateway.config import PolicyConfig
from gateway.guard.hold import Approvals, HoldSettings
from gateway.guard.pipeline import GuardedPath
from gateway.guard.policy_runtime import PolicyRuntime
from gateway.guard.target import Target
from gateway.mcp.context import RequestContext
from gateway.ports.store import Store, StoreHealth, StoreUnavailable
from gateway.ports.upstream import UpstreamError

# Tools of one upstream "ws", one per combination of legs the tests need.
TOOLS: dict[str, dict[str, Any]] = {
    "noop": {"legs": [], "effect": "read"},
    "search": {"legs": ["P"], "effect": "read"},
    "browse": {"legs": ["U"], "effect": "read"},
    "read_mail": {"legs": ["P", "U"], "effect": "read"},
    "fetch": {"legs": ["U", "E"], "effect": "read"},
    "send": {"legs": ["E"], "effect": "write"},
}


def policy_file(tmp: Path, reads_when_store_down: str = "allow", scope: str = "session") -> Path:
    """A controlled-like policy over TOOLS: reads allowed, writes held, the trifecta held, no first-use holds."""
    tools = "\n".join(
        f"      {name}: {{legs: [{', '.join(spec['legs'])}], effect: {spec['effect']}}}" for name, spec in TOOLS.items()
    )
    path = tmp / f"policy-{reads_when_store_down}-{scope}.yaml"
    path.write_text(
        f"""version: 1
name: inprocess
mode: enforce
strict: false
legs:
  scope: {scope}
first_use:
  enabled: false
defaults:
  read: allow
  write: hold
  destructive: hold
  unknown: hold
  store_unavailable_reads: {reads_when_store_down}
approval_required_actions: [email_send]
upstreams:
  ws:
    action_control: allow_all
    new_actions_default: hold
    tools:
{tools}
"""
    )
    return path


def target(tool: str) -> Target:
    """The Target the router would resolve for ``ws__<tool>``."""
    definition = {"name": tool, "description": f"{tool} tool", "inputSchema": {"type": "object"}}
    return Target("tool", "ws", tool, f"ws__{tool}", definition, "tools/call")


def context(principal: str) -> RequestContext:
    """A stateless-era request of ``principal`` (its session key is the principal)."""
    return RequestContext(principal=principal, protocol_version="2026-07-28", session=None, emit=None,
                          client_capabilities={})


def call_message(tool: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": f"ws__{tool}", "arguments": arguments or {}}}


class StubUpstream:
    """The upstream, stubbed: ``mode`` says how the next calls end. Counts the calls that reached it."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok, is_error, rpc_error, failure, hang
        self.reached: list[str] = []
        self.arrived = asyncio.Event()

    async def __call__(self, ctx: RequestContext, upstream: str, msg: dict[str, Any]) -> dict[str, Any]:
        self.reached.append(msg["params"]["name"])
        self.arrived.set()
        rid = msg["id"]
        if self.mode == "is_error":  # a failed tool whose text links to an outside page (untrusted content)
            return {"jsonrpc": "2.0", "id": rid, "result": {"isError": True, "content": [
                {"type": "text", "text": "failed; see the link"},
                {"type": "resource_link", "uri": "https://evil.example/instructions", "name": "help"}]}}
        if self.mode == "rpc_error":
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32603, "message": "internal error"}}
        if self.mode == "failure":
            raise UpstreamError(upstream, "closed", "stream ended before the response")
        if self.mode == "hang":
            await asyncio.Event().wait()  # until the caller is cancelled
        return {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "done"}]}}


WRITES = frozenset({"add_legs", "mark_used", "set_pin", "save_session", "create_approval", "decide", "consume",
                    "suspend", "resume", "expire_due"})


class FlakyStore:
    """A real store that fails on demand: every operation raises StoreUnavailable while ``down``,
    every write while ``read_only`` (a disk that still reads: the probe, a write, fails too).

    It keeps its own health from its own operations, as every adapter does (the breaker opens on
    a failure, and only a write or a probe closes it).
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.down = False
        self.read_only = False
        self.health = StoreHealth(probe_interval=0.0)  # the tests probe when they mean to

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.down or (self.read_only and name in WRITES):
                self.health.failed(f"injected outage in {name}")
                raise StoreUnavailable(f"injected outage in {name}")
            result = await attr(*args, **kwargs)
            if name in ("add_legs", "mark_used", "set_pin"):
                self.health.recovered()
            return result
        return guarded

    async def ping(self) -> bool:
        self.health.last_probe = 0.0
        if self.down or self.read_only or not await self.inner.ping():
            self.health.failed("injected outage: probe failed")
            return False
        self.health.recovered()
        return True

    def suspended(self) -> frozenset[str]:
        return self.inner.suspended()

    def state_stamp(self) -> Hashable:
        return (self.health.generation, self.inner.state_stamp())


def guarded_path(store: Any, policy: Path, upstream: StubUpstream) -> GuardedPath:
    """A GuardedPath over real parts; the held calls answer at once (no in-band wait)."""
    approvals = Approvals(store, HoldSettings(hold_wait=0.0))
    return GuardedPath(upstream, PolicyRuntime(PolicyConfig(file=policy)), store, approvals)


async def call(guard: GuardedPath, principal: str, tool: str, arguments: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """One tools/call through the guard: the result the client would get."""
    return await guard(context(principal), call_message(tool, arguments), target(tool))


def refusal(result: dict[str, Any]) -> str | None:
    """The gateway's refusal text (deny or hold), or None when the upstream's answer came back."""
    meta = result.get("_meta") or {}
    if result.get("isError") and ("triplock/decision" in meta or "triplock/approval" in meta
                                  or "Refused" in result["content"][0].get("text", "")):
        return str(result["content"][0]["text"])
    return None
