"""A hypothesis state machine over the guarded path in process (see guard_kit).

Steps: calls of tools with various legs by two sessions, ending every way a call can end (a
result, an ``isError`` result, a JSON-RPC error, an upstream failure, a cancellation while the
upstream works); the store dying and coming back; the store turning read-only (reads work,
writes fail) and the periodic probe noticing. Invariants:

- no call with an E leg, and no write, reaches the upstream while the store is known to fail;
- the legs this gateway knows for a session (the store's, plus those it kept in memory while a
  write failed) cover the legs of every call of that session that reached the upstream, and the
  store alone covers them once it is back and a call went through;
- no call that completes P+U+E reaches the upstream (the trifecta is held; nobody approves here).

The policy fails reads closed too when the store is down (``store_unavailable_reads: deny``):
with ``allow`` the policy itself lets reads run without recording their legs, by design.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from adapters.stores.memory_store import MemoryStore
from tests.guard.guard_kit import TOOLS, FlakyStore, StubUpstream, call, guarded_path, policy_file

ALL = frozenset({"P", "U", "E"})
ENDINGS = ["ok", "ok", "ok", "is_error", "rpc_error", "failure", "cancel"]


class GuardedPathMachine(RuleBasedStateMachine):
    """One gateway process, one store that can fail, two sessions."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.inner = MemoryStore(health_interval=3600)  # the machine runs the probe itself
        self.loop.run_until_complete(self.inner.start())
        self.store = FlakyStore(self.inner)
        self.upstream = StubUpstream()
        self.reached: dict[str, frozenset[str]] = {"alice": frozenset(), "bob": frozenset()}
        self.noticed = False  # the store failed and the gateway could know it (down, or probed)
        self.last = ("alice", "fetch", "ok")

    @initialize(tmp=st.just(None))
    def build(self, tmp: None) -> None:
        path = Path(self.loop.run_until_complete(asyncio.to_thread(_tmpdir)))
        self.guard = guarded_path(self.store, policy_file(path, reads_when_store_down="deny"), self.upstream)

    def teardown(self) -> None:
        self.loop.run_until_complete(self.inner.aclose())
        self.loop.close()

    # -- steps ------------------------------------------------------------------------------------

    @rule(principal=st.sampled_from(["alice", "bob"]), tool=st.sampled_from(sorted(TOOLS)),
          ending=st.sampled_from(ENDINGS))
    def a_call(self, principal: str, tool: str, ending: str) -> None:
        self.last = (principal, tool, ending)
        failing = self.store.down or self.store.read_only
        before = len(self.upstream.reached)
        self.upstream.mode = "hang" if ending == "cancel" else ending
        self.upstream.arrived.clear()
        self.loop.run_until_complete(self._call(principal, tool, ending))
        reached = len(self.upstream.reached) > before
        legs = frozenset(TOOLS[tool]["legs"])
        if reached:
            risky = "E" in legs or TOOLS[tool]["effect"] != "read"
            assert not (risky and failing and self.noticed), f"{tool} reached the upstream while the store failed"
            # the trifecta: no call that can send data out runs once the session holds P and U (a read may)
            assert not ("E" in legs and self.reached[principal] | legs >= ALL), f"{tool} sent out P+U unheld"
            if ending == "is_error":
                legs |= {"U"}  # the error result links to an outside page
            self.reached[principal] |= legs
        if not failing:
            stored = self._stored(principal)
            assert self.reached[principal] <= stored, (self.reached[principal], stored)

    @rule(times=st.integers(2, 4))
    def the_same_call_again(self, times: int) -> None:
        """Warm sessions: what an agent does most (legs, first use and pin then come from memory)."""
        for _ in range(times):
            self.a_call(*self.last)

    @rule()
    def store_dies(self) -> None:
        self.store.down = True
        self.noticed = True  # every call with an E leg or a write asks the store itself

    @rule()
    def disk_turns_read_only(self) -> None:
        self.store.read_only = True
        self.noticed = self.loop.run_until_complete(self.store.ping()) is False  # the periodic probe

    @rule()
    def store_comes_back(self) -> None:
        self.store.down = self.store.read_only = False
        self.noticed = False

    # -- invariants ---------------------------------------------------------------------------------

    @invariant()
    def no_leg_of_a_call_that_ran_is_forgotten(self) -> None:
        if not hasattr(self, "guard"):
            return
        for principal, legs in self.reached.items():
            cached = self.guard.state._principal_legs.get(f"legs:principal:{principal}")
            known = self._stored(principal) | (cached[0] if cached else frozenset())
            assert legs <= known, (principal, legs, known)

    # -- helpers ------------------------------------------------------------------------------------

    async def _call(self, principal: str, tool: str, ending: str) -> None:
        task = asyncio.ensure_future(call(self.guard, principal, tool, {"url": "https://evil.example/"}))
        if ending != "cancel":
            await task
            return
        arrived = asyncio.ensure_future(self.upstream.arrived.wait())
        done, _ = await asyncio.wait({task, arrived}, return_when=asyncio.FIRST_COMPLETED)
        arrived.cancel()
        if task not in done:
            task.cancel()  # the client cancelled while the upstream worked
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _stored(self, principal: str) -> frozenset[str]:
        record = self.loop.run_until_complete(
            self.inner.call_state("legs:none", "-", "ws", "-", f"legs:principal:{principal}"))
        return frozenset(record.principal_legs)


def _tmpdir() -> str:
    import tempfile
    return tempfile.mkdtemp(prefix="triplock-states-")


def _settings() -> Any:
    return settings(max_examples=100, stateful_step_count=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


GuardedPathMachine.TestCase.settings = _settings()
TestGuardedPath = GuardedPathMachine.TestCase
