"""MCP tasks (2025-11-25) for ``tools/call``: a held call becomes a task the client polls.

A client that declares task support and sends ``params.task`` gets a ``CreateTaskResult`` at
once; the call (its hold, then the upstream call) runs in the background, and ``tasks/get``,
``tasks/result``, ``tasks/list`` and ``tasks/cancel`` follow it. Tasks live in this process's
memory, scoped to the MCP session that created them (the approval behind a held task is in the
store and survives a restart; the task handle does not).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.mcp.jsonrpc import INVALID_PARAMS, ProtocolError

POLL_MS = 2000
DEFAULT_TTL_MS = 3_600_000


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def client_wants_tasks(capabilities: dict[str, Any]) -> bool:
    """The client declared task support (core capability, or the tasks extension)."""
    extensions = capabilities.get("extensions")
    return "tasks" in capabilities or (isinstance(extensions, dict) and "io.modelcontextprotocol/tasks" in extensions)


@dataclass
class CallTask:
    """One task: its status and, once finished, the ``tools/call`` result."""

    id: str
    owner: str  # the MCP session that created it
    ttl_ms: int
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    status: str = "working"
    message: str | None = None
    result: dict[str, Any] | None = None
    runner: asyncio.Task[None] | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def describe(self) -> dict[str, Any]:
        task: dict[str, Any] = {
            "taskId": self.id,
            "status": self.status,
            "createdAt": _iso(self.created),
            "lastUpdatedAt": _iso(self.updated),
            "ttl": self.ttl_ms,
            "pollInterval": POLL_MS,
        }
        if self.message:
            task["statusMessage"] = self.message
        return task


class TaskRegistry:
    """The tasks of this process, with expiry by their ttl."""

    def __init__(self) -> None:
        self._tasks: dict[str, CallTask] = {}

    def start(self, owner: str, ttl_ms: Any, work: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Run ``work`` as a task; returns the ``CreateTaskResult``."""
        self._expire()
        ttl = ttl_ms if isinstance(ttl_ms, int) and 0 < ttl_ms <= DEFAULT_TTL_MS * 24 else DEFAULT_TTL_MS
        task = CallTask(id=f"task_{secrets.token_hex(12)}", owner=owner, ttl_ms=ttl)
        self._tasks[task.id] = task
        task.runner = asyncio.get_running_loop().create_task(self._run(task, work))
        return {"task": task.describe()}

    async def _run(self, task: CallTask, work: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        try:
            result = await work()
            task.result = result
            task.status = "failed" if result.get("isError") else "completed"
            if result.get("isError"):
                task.message = "".join(c.get("text", "") for c in result.get("content", []) if isinstance(c, dict))
        except asyncio.CancelledError:
            task.status, task.message = "cancelled", "cancelled by the client"
        except ProtocolError as exc:
            task.status, task.message = "failed", exc.message
        except Exception as exc:  # a task must end in a state, whatever happened
            task.status, task.message = "failed", f"internal error: {type(exc).__name__}"
        finally:
            task.updated = time.time()
            task.done.set()

    def get(self, owner: str, params: dict[str, Any]) -> CallTask:
        task_id = params.get("taskId")
        task = self._tasks.get(task_id) if isinstance(task_id, str) else None
        if task is None or task.owner != owner:
            raise ProtocolError(INVALID_PARAMS, f"Unknown task: {task_id}")
        return task

    async def result(self, owner: str, params: dict[str, Any]) -> dict[str, Any]:
        """``tasks/result``: waits until the task ends, then its result."""
        task = self.get(owner, params)
        await task.done.wait()
        if task.result is not None:
            return task.result
        return {"content": [{"type": "text", "text": task.message or task.status}], "isError": True}

    def cancel(self, owner: str, params: dict[str, Any]) -> dict[str, Any]:
        task = self.get(owner, params)
        if task.runner is not None and not task.done.is_set():
            task.runner.cancel()
        task.status, task.updated = "cancelled", time.time()
        return task.describe()

    def list(self, owner: str) -> dict[str, Any]:
        return {"tasks": [t.describe() for t in self._tasks.values() if t.owner == owner]}

    def _expire(self) -> None:
        now = time.time()
        for tid in [t.id for t in self._tasks.values() if t.done.is_set() and now - t.created > t.ttl_ms / 1000]:
            self._tasks.pop(tid, None)
