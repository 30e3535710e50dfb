"""Tool classification: legs, effect and category of a tool, with the source that decided.

Precedence (first that knows wins; `explain` names it):
  1. the policy file entry for the tool (exact name, then globs in file order);
  2. MCP annotations, only for upstreams marked `trust_annotations: true`;
  3. the built-in catalog of well-known connectors, then verb heuristics on the tool name;
  4. unknown: a write touching P, U and E.
A policy entry may set only some fields (say, just `category`); the rest come from below.

Resources and prompts (`classify_read_object`) are always reads; their legs come from the policy
entry, else the upstream's catalog app, else fail closed to P+U (never the unknown tool's hold).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policy.catalog import App, app_for_tool_name
from policy.models import ALL_LEGS, Effect, Leg, ProfileKind, ProfileSource

P, U, E = Leg.P, Leg.U, Leg.E


def _w(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Write verb classes. A name with any write verb is a write: it is not provably read-only.
WRITE_CLASSES: dict[str, frozenset[str]] = {
    "send": _w("send reply forward post publish notify share dm invite email message broadcast tweet respond"),
    "push": _w("push merge release tag deploy commit rebase"),
    "pay": _w("pay transfer charge refund payout wire purchase buy withdraw deposit"),
    "delete": _w("delete remove drop destroy purge wipe erase trash revoke terminate kill truncate unlink rm"),
    "bulk": _w("bulk batch import sync"),
    "comment": _w("comment annotate"),
    "create": _w("create add insert new upload put write draft book schedule fork copy clone make"),
    "update": _w(
        "update edit modify patch set upsert rename move change assign label mark archive close approve reject "
        "grant start stop restart run exec execute invoke trigger submit install uninstall enable disable apply "
        "save replace resolve complete star unstar subscribe unsubscribe lock unlock reset"
    ),
}
_VERB_CLASS = {verb: cls for cls, verbs in WRITE_CLASSES.items() for verb in verbs}
READ_VERBS = _w(
    "get list search read fetch find query lookup look describe show view retrieve browse download count "
    "check inspect peek summarize export watch poll scan navigate load extract stat tail cat grep ls "
    "whoami ping status info preview render"
)
# Words that are verbs or nouns ('post_to_chat' vs 'get_post'): a write only when no read verb
# comes before them in the name.
AMBIGUOUS = _w(
    "email message dm invite tag release commit comment draft charge transfer refund wire book label star post "
    "lock reset new copy share run start stop close archive patch change mark set move schedule deposit payout "
    "import sync batch bulk"
)

# Noun hints for tools of upstreams that are not catalog apps: (read legs, write class -> category)
_NOUNS: tuple[tuple[frozenset[str], frozenset[Leg], dict[str, str]], ...] = (
    (
        _w("payment payments invoice invoices transaction transactions payout refund charge wallet"),
        frozenset({P}),
        dict.fromkeys(("create", "update", "send", "pay"), "financial_transaction_any"),
    ),
    (
        _w("email emails mail mails inbox message messages thread threads gmail outlook"),
        frozenset({P, U}),
        {"send": "email_send", "create": "email_draft"},
    ),
    (
        _w("chat chats channel channels slack dm dms teams conversation conversations"),
        frozenset({P, U}),
        dict.fromkeys(("send", "create"), "slack_post_to_channel_or_external_dm"),
    ),
    (
        _w("calendar event events meeting meetings invite invitation appointment"),
        frozenset({P, U}),
        dict.fromkeys(("send", "create"), "calendar_invite_external"),
    ),
    (
        _w("crm salesforce lead leads opportunity opportunities contact contacts customer customers"),
        frozenset({P}),
        dict.fromkeys(("create", "update", "delete", "bulk"), "salesforce_record_create_update_delete"),
    ),
    (
        _w("repo repos repository branch pr pull commit release github gitlab"),
        frozenset({P}),
        {"push": "github_push_merge_release", "delete": "github_push_merge_release"},
    ),
    (
        _w("drive file files doc docs document documents folder sharepoint onedrive sheet spreadsheet"),
        frozenset({P}),
        dict.fromkeys(("delete", "bulk"), "sharepoint_drive_bulk_write_or_delete"),
    ),
    (
        _w("url urls web page pages website webpage http https link links site internet browser"),
        frozenset({U, E}),
        {},
    ),
)


@dataclass(frozen=True)
class Classification:
    """Legs, effect and category of a tool, and which source decided them."""

    legs: frozenset[Leg]
    effect: Effect
    category: str | None
    source: ProfileSource
    detail: str


UNKNOWN = Classification(ALL_LEGS, Effect.WRITE, None, "unknown", "no source classifies this tool")


def tokens(name: str) -> list[str]:
    """Split a tool name into lower-case words: 'sendEmail', 'send_email', 'send-email.v2'."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [t for t in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if t]


def _write_class(words: list[str]) -> str | None:
    seen_read = False
    for word in words:
        cls = _VERB_CLASS.get(word)
        if cls is not None and not (seen_read and word in AMBIGUOUS):
            return cls
        seen_read = seen_read or word in READ_VERBS
    return None


def _write_category(cls: str, words: list[str], app: App | None) -> str | None:
    if cls == "pay":
        return "financial_transaction_any"
    if app is not None:
        return app.categories.get(cls, app.default_write_category)
    word_set = set(words)
    for nouns, _legs, categories in _NOUNS:
        if word_set & nouns and cls in categories:
            return categories[cls]
    return None


def _read_legs(words: list[str]) -> frozenset[Leg]:
    word_set = set(words)
    legs: set[Leg] = set()
    for nouns, read_legs, _cats in _NOUNS:
        if word_set & nouns:
            legs |= read_legs
    # no hint: assume it reads private data we cannot vouch for
    return frozenset(legs) if legs else frozenset({P, U})


def heuristic(tool: str, app: App | None) -> Classification | None:
    """Classify by catalog app and verbs in the tool name; None when no verb is recognised."""
    app = app or app_for_tool_name(tool)
    words = tokens(tool)
    source: ProfileSource = "catalog" if app is not None else "heuristic"
    where = f"catalog app {app.name}" if app is not None else "name heuristics"
    cls = _write_class(words)
    if cls is not None:
        effect = Effect.DESTRUCTIVE if cls == "delete" else Effect.WRITE
        category = _write_category(cls, words, app)
        return Classification(frozenset({E}), effect, category, source, f"{where}: write verb class {cls!r}")
    verb = next((w for w in words if w in READ_VERBS), None)
    if verb is not None:
        legs = app.read_legs if app is not None else _read_legs(words)
        if not legs:
            legs = frozenset({P})
        return Classification(legs, Effect.READ, None, source, f"{where}: read verb {verb!r}")
    return None


def from_annotations(annotations: Mapping[str, Any] | None) -> Classification | None:
    """Classify from MCP annotations (only called for trusted upstreams).

    MCP's defaults apply to absent hints: readOnlyHint false, destructiveHint true, openWorldHint true.
    A read always counts as P (an internal server's data is private); open world adds U and E.
    """
    if not annotations or not ({"readOnlyHint", "destructiveHint"} & set(annotations)):
        return None
    open_world = annotations.get("openWorldHint", True) is not False
    if annotations.get("readOnlyHint") is True:
        legs = frozenset({P, U, E}) if open_world else frozenset({P})
        return Classification(legs, Effect.READ, None, "annotations", "annotations: readOnlyHint")
    destructive = annotations.get("destructiveHint", True) is not False
    effect = Effect.DESTRUCTIVE if destructive else Effect.WRITE
    legs = frozenset({U, E}) if open_world else frozenset({E})
    return Classification(legs, effect, None, "annotations", f"annotations: {effect.value}")


def classify(
    tool: str,
    annotations: Mapping[str, Any] | None,
    app: App | None,
    trust_annotations: bool,
    entry_legs: frozenset[Leg] | None,
    entry_effect: Effect | None,
    entry_category: str | None,
    entry_where: str | None,
) -> Classification:
    """Resolve a tool's classification by precedence; see the module docstring."""
    lower = (from_annotations(annotations) if trust_annotations else None) or heuristic(tool, app) or UNKNOWN
    if lower.source == "annotations" and lower.category is None:
        # annotations say what a tool does, not which 6.3 category it is: take that from below
        below = heuristic(tool, app)
        if below is not None and below.effect is not Effect.READ and lower.effect is not Effect.READ:
            lower = Classification(lower.legs, lower.effect, below.category, lower.source, lower.detail)
    if entry_legs is None and entry_effect is None:
        if entry_category is not None:
            detail = f"{lower.detail}; category from {entry_where}"
            return Classification(lower.legs, lower.effect, entry_category, lower.source, detail)
        return lower
    return Classification(
        legs=entry_legs if entry_legs is not None else lower.legs,
        effect=entry_effect if entry_effect is not None else lower.effect,
        category=entry_category if entry_category is not None else lower.category,
        source="policy",
        detail=f"policy file {entry_where}",
    )


def classify_read_object(
    kind: ProfileKind,
    app: App | None,
    entry_legs: frozenset[Leg] | None,
    entry_category: str | None,
    entry_where: str | None,
) -> Classification:
    """Classify a resource or prompt: always a read; legs from the policy entry, else the
    upstream's catalog app, else P+U.

    Why P+U when nobody classified it: a resource or prompt is content the upstream chose, so it
    may be private data and may carry an injection. Counting it as both does not hold the read
    itself; it makes a later external send in the same session complete the trifecta.
    """
    if entry_legs is not None:
        return Classification(entry_legs, Effect.READ, entry_category, "policy", f"policy file {entry_where}")
    source: ProfileSource
    if app is not None and app.read_legs:
        legs, source, detail = app.read_legs, "catalog", f"catalog app {app.name}: read legs"
    else:
        legs, source = frozenset({P, U}), "unknown"
        detail = f"no policy entry classifies this {kind}: counted as private data and untrusted input (P+U)"
    if entry_category is not None:
        detail = f"{detail}; category from {entry_where}"
    return Classification(legs, Effect.READ, entry_category, source, detail)
