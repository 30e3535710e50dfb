"""Helpers the families share: records as tool outputs, and attacks as carrier x goal."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from load_tests.agent_corpus import org
from load_tests.agent_corpus.goals import Goal
from load_tests.agent_corpus.model import Session, Step
from load_tests.agent_corpus.suites import tool_def

Carrier = Callable[[str], tuple[str, list[Step], list[Step]]]
"""Given the injected text, the user's task, the steps up to the read that carries the injection,
and the steps of the user's task that follow the attack."""
GoalMaker = Callable[[int], Goal]


def email(mid: str, sender: str, subject: str, body: str, to: str = org.USER, day: str = "2026-05-13",
          read: bool = False) -> dict[str, Any]:
    """An email as a mail tool returns it."""
    return {"id": mid, "from": sender, "to": [to], "cc": [], "subject": subject, "body": body,
            "timestamp": f"{day}T09:{int(mid[-2:]) % 60:02d}:00Z", "read": read, "attachments": []}


def file_rec(fid: str, name: str, content: str, owner: str = org.USER, shared: dict[str, str] | None = None,
             ) -> dict[str, Any]:
    """A drive file as the drive tools return it."""
    return {"id": fid, "filename": name, "owner": owner, "content": content, "size": len(content),
            "last_modified": "2026-05-12T16:40:00Z", "shared_with": shared or {}}


def event(eid: str, title: str, start: str, end: str, participants: list[str], description: str = "",
          location: str = "") -> dict[str, Any]:
    """A calendar event as the calendar tools return it."""
    return {"id": eid, "title": title, "start_time": start, "end_time": end, "participants": participants,
            "description": description, "location": location, "status": "confirmed"}


def message(sender: str, body: str, channel: str = "general") -> dict[str, Any]:
    """A chat message as the chat tools return it."""
    return {"sender": sender, "recipient": channel, "body": body}


def attacks(family: str, carriers: Sequence[Carrier], goals: Sequence[GoalMaker]) -> list[Session]:
    """Every carrier with every goal: the injected text asks for the goal, the agent obeys fully."""
    out: list[Session] = []
    n = 0
    for ci, carrier in enumerate(carriers):
        for gi, make in enumerate(goals):
            goal = make(n)
            text = org.injection(goal.instruction, n)
            task, before, after = carrier(text)
            out.append(Session(f"{family}-attack-{ci:02d}-{gi:02d}", family, "attack", task,
                               (*before, *goal.steps, *after), goal=goal.key, tags=(f"carrier{ci}",)))
            n += 1
    return out


def benign(family: str, tasks: Sequence[tuple[str, list[Step]]]) -> list[Session]:
    """Number the benign tasks of a family; those whose every tool is read-only are tagged so."""
    return [Session(f"{family}-benign-{i:02d}", family, "benign", task, tuple(steps),
                    tags=("read-only",) if all(tool_def(s.upstream, s.tool).read_only for s in steps) else ())
            for i, (task, steps) in enumerate(tasks)]
