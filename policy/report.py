"""Seed 6.4's inventory check: which agents' connected apps span all three legs.

Reads the Global Admin Console export (columns agent_id, agent_name, owner_email,
connected_apps) with the same catalog the engine classifies tools with. An app the catalog
does not know counts as touching all three legs, as an unknown tool does.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from policy.catalog import split_app_list
from policy.models import ALL_LEGS, NO_LEGS, Leg, Legs

REQUIRED_COLUMNS = ("agent_id", "agent_name", "owner_email", "connected_apps")


class ReportInputError(ValueError):
    """The CSV does not have the expected columns."""


@dataclass(frozen=True)
class AgentRow:
    """One agent's classification."""

    agent_id: str
    agent_name: str
    owner_email: str
    apps: tuple[str, ...]
    unknown_apps: tuple[str, ...]
    legs: frozenset[Leg]
    private: tuple[str, ...]
    untrusted: tuple[str, ...]
    external: tuple[str, ...]

    @property
    def trifecta(self) -> bool:
        """All three legs covered (unknown apps count as all three)."""
        return self.legs >= ALL_LEGS

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "agent_id": self.agent_id,
            "agent_name": self.agent_name,
            "owner_email": self.owner_email,
            "apps": list(self.apps),
            "unknown_apps": list(self.unknown_apps),
            "legs": Legs.format(self.legs),
            "private_data": list(self.private),
            "untrusted_input": list(self.untrusted),
            "external_send": list(self.external),
            "trifecta": self.trifecta,
        }


def classify_agent(agent_id: str, agent_name: str, owner: str, connected_apps: str) -> AgentRow:
    """Classify one agent's connected-apps field."""
    known, unknown = split_app_list(connected_apps)
    legs = frozenset().union(*(a.legs for a in known)) if known else NO_LEGS
    if unknown:
        legs = ALL_LEGS
    return AgentRow(
        agent_id=agent_id,
        agent_name=agent_name,
        owner_email=owner,
        apps=tuple(a.name for a in known),
        unknown_apps=tuple(unknown),
        legs=legs,
        private=tuple(a.name for a in known if Leg.P in a.legs),
        untrusted=tuple(a.name for a in known if Leg.U in a.legs),
        external=tuple(a.name for a in known if Leg.E in a.legs),
    )


def read_inventory(text: str) -> list[AgentRow]:
    """Parse the CSV export text into classified rows."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ReportInputError(f"missing column(s): {', '.join(missing)}")
    rows = []
    for raw in reader:
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if isinstance(v, str | None)}
        if not any(row.values()):
            continue
        rows.append(classify_agent(row["agent_id"], row["agent_name"], row["owner_email"], row["connected_apps"]))
    return rows


def render_table(rows: list[AgentRow]) -> str:
    """A fixed-width table with a summary line."""
    headers = ("TRIFECTA", "AGENT_ID", "AGENT_NAME", "OWNER", "LEGS", "APPS")
    table = [
        (
            "YES" if r.trifecta else "no",
            r.agent_id,
            r.agent_name,
            r.owner_email,
            Legs.format(r.legs),
            ", ".join(r.apps + tuple(f"{u}(unknown)" for u in r.unknown_apps)) or "-",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(t, widths, strict=True)).rstrip() for t in table]
    flagged = sum(r.trifecta for r in rows)
    lines.append("")
    lines.append(
        f"{flagged} of {len(rows)} agent(s) span the lethal trifecta: require human approval on every "
        "external-send action or reduce their connected apps."
        if flagged
        else f"No trifecta-exposed agents among {len(rows)}."
    )
    return "\n".join(lines)
