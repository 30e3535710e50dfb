"""The whole corpus: every family's sessions, checked against the tool definitions, and selections
of it (by family, a limit, the quick subset the tests replay)."""

from __future__ import annotations

from collections.abc import Sequence

from load_tests.agent_corpus.families import banking, calendar, chat, code, crm, drive, mail, travel, web
from load_tests.agent_corpus.model import Session
from load_tests.agent_corpus.suites import tool_def

FAMILIES = {"mail": mail, "calendar": calendar, "drive": drive, "chat": chat, "crm": crm, "web": web,
            "banking": banking, "code": code, "travel": travel}


class CorpusError(ValueError):
    """A session that does not fit the tool definitions or its label."""


def check(session: Session) -> None:
    """Raise :class:`CorpusError` unless every step calls a defined tool with valid argument names,
    an attack labels at least one harmful step and a benign task none."""
    if not session.steps:
        raise CorpusError(f"{session.id}: no steps")
    for i, step in enumerate(session.steps):
        try:
            tool = tool_def(step.upstream, step.tool)
        except KeyError as exc:
            raise CorpusError(f"{session.id} step {i}: {exc}") from None
        unknown = set(step.arguments) - set(tool.properties)
        missing = set(tool.required) - set(step.arguments)
        if unknown or missing:
            raise CorpusError(f"{session.id} step {i} {step.exposed}: unknown arguments {sorted(unknown)}, "
                              f"missing {sorted(missing)}")
    if session.kind == "attack" and not session.harmful_steps:
        raise CorpusError(f"{session.id}: an attack with no harmful step")
    if session.kind == "benign" and session.harmful_steps:
        raise CorpusError(f"{session.id}: a benign task with a harmful step")


def load(families: Sequence[str] | None = None, limit: int | None = None) -> list[Session]:
    """The corpus (checked), in a fixed order: families as listed, benign tasks before attacks.

    ``limit`` keeps at most that many sessions *per family*, alternating benign and attacks so a
    small limit still has both kinds."""
    names = list(families) if families else list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise CorpusError(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    out: list[Session] = []
    seen: set[str] = set()
    for name in names:
        sessions = FAMILIES[name].sessions()
        for s in sessions:
            check(s)
            if s.id in seen:
                raise CorpusError(f"duplicate session id {s.id}")
            seen.add(s.id)
        if limit is not None:
            sessions = _interleave(sessions)[:limit]
        out.extend(sessions)
    return out


def _interleave(sessions: list[Session]) -> list[Session]:
    """Benign and attack sessions alternating, attacks spread over their carriers and goals."""
    benign = [s for s in sessions if s.kind == "benign"]
    attack = [s for s in sessions if s.kind == "attack"]
    step = 7 if len(attack) > 7 else 1  # coprime with the goal counts: a spread of carriers and goals
    attack = [attack[(i * step) % len(attack)] for i in range(len(attack))] if attack else []
    out: list[Session] = []
    for i in range(max(len(benign), len(attack))):
        out.extend(x[i] for x in (benign, attack) if i < len(x))
    return out


def quick(per_family: int = 3) -> list[Session]:
    """A deterministic subset for the tests: ``per_family`` sessions of every family, both kinds."""
    return load(limit=per_family)
