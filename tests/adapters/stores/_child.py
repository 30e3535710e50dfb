"""A second process using the store, driven by the durability and cross-process tests.

    python -m tests.adapters.stores._child sqlite PATH - write     # fill every kind of state, then keep writing
    python -m tests.adapters.stores._child redis URL PREFIX decide N  # wait for 'go' on stdin, N concurrent decides

`write` prints 'PENDING <id>', 'APPROVED <id>', 'READY', then 'ID <id>' after each further committed
approval until it is killed. `decide` reads the approval id and 'go' from stdin and prints the
outcomes as one JSON list.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from adapters.stores.redis_store import RedisStore
from adapters.stores.sqlite_store import SqliteStore
from gateway.ports.records import PendingApproval

ARGS = {"to": "eve@example.org", "body": "quarterly numbers"}


def pending(now: float | None = None) -> PendingApproval:
    return PendingApproval.new(principal="agent:a", session_id="s1", upstream="mail", tool="send_email",
                               arguments=ARGS, policy_revision="rev-1", now=now, legs_before="PU", legs_after="PUE")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def write(store: SqliteStore | RedisStore) -> None:
    await store.add_legs("sess:1", frozenset({"P", "U"}), None)
    await store.mark_used("tool:mail/send_email")
    await store.set_pin("mail", "send_email", "sha256:pinned", by="admin")
    await store.suspend("agent:rogue", by="admin", reason="exfiltration")
    a, b = pending(), pending()
    await store.create_approval(a)
    await store.create_approval(b)
    await store.decide(b.id, True, "human:h", "fine", time.time())
    say(f"PENDING {a.id}")
    say(f"APPROVED {b.id}")
    say("READY")
    while True:  # keep writing until SIGKILL lands somewhere in the middle of one of these
        c = PendingApproval.new(principal="agent:z", session_id="s9", upstream="mail", tool="send_email",
                                arguments={"n": time.time()}, policy_revision="rev-1")
        await store.create_approval(c)
        await store.add_legs("sess:9", frozenset({"P"}), None)
        say(f"ID {c.id}")


async def decide(store: SqliteStore | RedisStore, n: int) -> None:
    say("READY")  # connected: the parent starts every child's decisions at once after this
    approval_id = sys.stdin.readline().strip()
    assert sys.stdin.readline().strip() == "go"
    now = time.time()
    outcomes = await asyncio.gather(*(store.decide(approval_id, i % 2 == 0, f"human:{i}", "r", now)
                                      for i in range(n)))
    say(json.dumps([o.status for o in outcomes]))


async def main(argv: list[str]) -> None:
    kind, target, prefix, mode = argv[:4]
    store: SqliteStore | RedisStore = SqliteStore(target) if kind == "sqlite" else RedisStore(target, prefix=prefix)
    await store.start()
    try:
        await (write(store) if mode == "write" else decide(store, int(argv[4])))
    finally:
        await store.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
