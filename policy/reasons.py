"""Findings that name their evidence: the trifecta with the calls that built it, and values whose
provenance is untrusted content.

Kept apart from `engine.py` because they run only on the rare calls that are held for these
reasons; the hot path never formats a string.
"""

from __future__ import annotations

from collections.abc import Mapping

from policy.models import Leg
from policy.plan import Finding
from policy.provenance import carried_values, kind_of
from policy.rules import HOLD

_NAMES = {Leg.P: "private data", Leg.U: "untrusted input"}
_MAX_SHOWN = 120


def _shown(text: str) -> str:
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 1] + "…"


def trifecta_reason(legs_before: frozenset[Leg], sources: Mapping[str, str]) -> str:
    """'this call can send data out (E), and the session holds private data (P, from X) and
    untrusted input (U, from this call)': each leg named by the earlier call that brought it."""
    parts = []
    for leg in (Leg.P, Leg.U):
        where = sources.get(leg.value, "an earlier call") if leg in legs_before else "this call"
        parts.append(f"{_NAMES[leg]} ({leg.value}, from {where})")
    return f"this call can send data out (E), and the session holds {parts[0]} and {parts[1]}: the lethal trifecta"


def provenance_findings(
    arguments: Mapping[str, object], tainted: Mapping[str, str], saturated: bool
) -> list[Finding]:
    """A hold for each value the arguments carry that arrived in untrusted content (at most 3
    named, then a count); with a saturated memory, a hold for any value at all."""
    hits: list[tuple[str, str, str]] = []
    carried = carried_values(arguments)
    for name, key, shown in carried:
        if key in tainted:
            hits.append((name, key, shown))
    findings: list[Finding] = []
    for name, key, shown in hits[:3]:
        findings.append(
            (
                HOLD,
                "provenance.untrusted_value",
                f"argument {name!r} carries the {kind_of(key)} {_shown(shown)!r}, which arrived in untrusted "
                f"content returned by {tainted[key]}",
            )
        )
    if len(hits) > 3:
        findings.append((HOLD, "provenance.untrusted_value", f"and {len(hits) - 3} more such values"))
    if not hits and saturated and carried:
        findings.append(
            (
                HOLD,
                "provenance.saturated",
                "more untrusted values arrived in this session than Triplock keeps, so it cannot tell whether "
                f"the {kind_of(carried[0][1])} in argument {carried[0][0]!r} came from them",
            )
        )
    return findings
