"""Tool classification: legs, effect and category of a tool, with the source that decided.

Precedence (first that knows wins; `explain` names it):
  1. the policy file entry for the tool (exact name, then globs in file order);
  2. MCP annotations, only for upstreams marked `trust_annotations: true`;
  3. the built-in catalog of well-known connectors, then name heuristics on the tool's name and schema;
  4. unknown: a write touching P, U and E.
A policy entry may set only some fields (say, just `category`); the rest come from below.

What the tool itself says (its name's verbs and nouns, its input schema) is never weakened by an
app or by annotations, only added to: an upstream's name never picks a catalog app (only `app:`
in the policy does), a fetch (web verbs or nouns, or a URL argument) is U+E whatever the app, a
write is E, a payment is `financial_transaction_any`.

Resources and prompts (`classify_read_object`) are always reads; their legs come from the policy
entry, else the upstream's catalog app, else fail closed to P+U (never the unknown tool's hold).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policy.arguments import ArgumentShape, argument_shape
from policy.catalog import App, app_for_tool_name
from policy.models import ALL_LEGS, NO_LEGS, Effect, Leg, ProfileKind, ProfileSource, ToolDefinition
from policy.vocabulary import (
    AMBIGUOUS,
    CONJUNCTIONS,
    FETCH_VERBS,
    NOUN_FAMILIES,
    PAYMENT_NOUNS,
    READ_VERBS,
    VERB_CLASS,
    WEB_NOUNS,
    WEB_VERBS,
    name_words,
    tokens,
)

__all__ = ["UNKNOWN", "Classification", "classify", "classify_read_object", "heuristic", "read_name", "tokens"]

P, U, E = Leg.P, Leg.U, Leg.E
_FETCH_LEGS = frozenset({U, E})
_PAYMENT = "financial_transaction_any"


@dataclass(frozen=True)
class Classification:
    """Legs, effect and category of a tool, and which source decided them."""

    legs: frozenset[Leg]
    effect: Effect
    category: str | None
    source: ProfileSource
    detail: str


UNKNOWN = Classification(ALL_LEGS, Effect.WRITE, None, "unknown", "no source classifies this tool")


@dataclass(frozen=True)
class NameReading:
    """What a tool's own name and input schema say, before any app, annotation or policy entry."""

    words: tuple[str, ...]
    write_class: str | None
    write_verb: str | None
    read_verb: str | None
    fetch: bool
    noun_legs: frozenset[Leg]  # legs of the recognised nouns (a fetch: U+E); empty when none
    nouns: tuple[str, ...]
    shape: ArgumentShape


def _write_verb(words: tuple[str, ...]) -> tuple[str, str] | None:
    """The write verb of a name and its class, if any.

    In the first clause a word that is also a noun ('message', 'post') is a write only when no read
    verb comes before it ('get_message' reads). After a conjunction ('lookup_and_email_customer',
    'search_then_post') every write verb counts: the name does two things, and one of them writes.
    """
    seen_read = False
    joined = False
    for word in words:
        if word in CONJUNCTIONS:
            joined = True
            continue
        cls = VERB_CLASS.get(word)
        if cls is not None and (joined or not (seen_read and word in AMBIGUOUS)):
            return word, cls
        seen_read = seen_read or word in READ_VERBS
    return None


def read_name(definition: ToolDefinition) -> NameReading:
    """Read a tool's name and schema: its write class, read verb, nouns and whether it is a fetch."""
    words = name_words(definition.name)
    shape = argument_shape(definition.input_schema)
    word_set = frozenset(words)
    read_verb = next((w for w in words if w in READ_VERBS or w in FETCH_VERBS), None)
    web_verb = next((w for w in words if w in WEB_VERBS), None)
    fetch = bool(word_set & FETCH_VERBS) or (
        (read_verb is not None or web_verb is not None) and bool(word_set & WEB_NOUNS or shape.url_args)
    )
    nouns: list[str] = []
    legs: frozenset[Leg] = NO_LEGS
    if fetch:
        # what a fetch reads is whatever the URL serves: untrusted, and the URL itself leaves (U+E)
        nouns = (
            [w for w in words if w in WEB_NOUNS]
            or [f"argument {a!r}" for a in shape.url_args]
            or [f"verb {w!r}" for w in words if w in FETCH_VERBS]
        )
        legs = _FETCH_LEGS
    else:
        for family in NOUN_FAMILIES:
            found = [w for w in words if w in family.nouns]
            if found:
                nouns.extend(w for w in found if w not in nouns)
                legs = legs | family.read_legs
    verb, cls = _write_verb(words) or (None, None)
    return NameReading(words, cls, verb, read_verb or web_verb, fetch, legs, tuple(nouns), shape)


def _write_category(cls: str, words: tuple[str, ...], app: App | None) -> tuple[str | None, str]:
    """The category of a write and why."""
    word_set = frozenset(words)
    money = sorted(word_set & PAYMENT_NOUNS)
    if cls == "pay" or money:
        # money moving is a payment whatever the app calls it
        return _PAYMENT, f"payment noun {money[0]!r}" if money else "a payment verb"
    if app is not None and cls in app.categories:
        return app.categories[cls], f"app {app.name}"
    for family in NOUN_FAMILIES:
        found = word_set & family.nouns
        if found and cls in family.categories:
            return family.categories[cls], f"noun {sorted(found)[0]!r}"
    if app is not None and app.default_write_category is not None:
        return app.default_write_category, f"app {app.name}"
    return None, "no category"


def _legs_text(legs: frozenset[Leg]) -> str:
    return "+".join(leg.value for leg in (P, U, E) if leg in legs) or "-"


def _name_legs(reading: NameReading, app: App | None) -> tuple[frozenset[Leg], str] | None:
    """A read's legs from its own nouns plus the app's (an app adds legs, never removes the
    tool's own), and why; None when neither the name nor an app says anything."""
    app_legs = app.read_legs if app is not None else NO_LEGS
    if reading.noun_legs:
        kind = "a fetch" if reading.fetch else "nouns"
        why = f"{kind} {', '.join(reading.nouns)} ({_legs_text(reading.noun_legs)})"
        if app_legs - reading.noun_legs:
            why += f"; the app adds {_legs_text(app_legs - reading.noun_legs)}"
        return reading.noun_legs | app_legs, why
    if app is not None:
        return (app_legs or frozenset({P})), "the app's read legs"
    return None


def heuristic(definition: ToolDefinition, app: App | None, reading: NameReading | None = None) -> Classification | None:
    """Classify by the tool's name and schema, plus a catalog app (declared for the upstream, or
    named by the tool's own prefix); None when no verb is recognised."""
    app = app or app_for_tool_name(definition.name)
    r = reading or read_name(definition)
    source: ProfileSource = "catalog" if app is not None else "heuristic"
    where = f"catalog app {app.name}" if app is not None else "name heuristics"
    if r.write_class is not None:
        effect = Effect.DESTRUCTIVE if r.write_class == "delete" else Effect.WRITE
        category, why = _write_category(r.write_class, r.words, app)
        detail = f"{where}: write verb {r.write_verb!r} (class {r.write_class!r}), {why}"
        return Classification(frozenset({E}), effect, category, source, detail)
    if r.read_verb is None:
        return None
    named = _name_legs(r, app)
    if named is not None:
        legs, why = named
        return Classification(legs, Effect.READ, None, source, f"{where}: read verb {r.read_verb!r}, {why}")
    # Nothing says what it reads: assume private data we cannot vouch for (P+U). If an argument can
    # carry free text, the read itself can carry data out (a search query sent who knows where): E.
    detail = f"{where}: read verb {r.read_verb!r}, no recognised noun (P+U)"
    if r.shape.free_text_args:
        args = ", ".join(repr(a) for a in r.shape.free_text_args)
        detail += f"; free-text argument {args} can carry data out of the organisation (E)"
        return Classification(ALL_LEGS, Effect.READ, None, source, detail)
    return Classification(frozenset({P, U}), Effect.READ, None, source, detail)


def from_annotations(annotations: Mapping[str, Any] | None, shape: ArgumentShape) -> Classification | None:
    """Classify from MCP annotations (only called for trusted upstreams).

    MCP's defaults apply to absent hints: readOnlyHint false, destructiveHint true, openWorldHint true.
    A read of a closed world is P (an internal server's data is private); of an open world U, plus
    E only when an argument carries a URL (a fetch: the URL leaves). A write is E, open world adds U.
    """
    if not annotations or not ({"readOnlyHint", "destructiveHint"} & set(annotations)):
        return None
    open_world = annotations.get("openWorldHint", True) is not False
    if annotations.get("readOnlyHint") is True:
        if not open_world:
            legs, detail = frozenset({P}), "annotations: read-only, closed world (P)"
        elif shape.url_args:
            legs = _FETCH_LEGS
            detail = f"annotations: read-only, open world, URL argument {shape.url_args[0]!r}: a fetch (U+E)"
        else:
            legs, detail = frozenset({U}), "annotations: read-only, open world (U)"
        return Classification(legs, Effect.READ, None, "annotations", detail)
    destructive = annotations.get("destructiveHint", True) is not False
    effect = Effect.DESTRUCTIVE if destructive else Effect.WRITE
    legs = frozenset({U, E}) if open_world else frozenset({E})
    return Classification(legs, effect, None, "annotations", f"annotations: {effect.value}")


def _with_annotations(ann: Classification, name: Classification | None, reading: NameReading) -> Classification:
    """Annotations decide the effect; the tool's own name still adds its legs (never weakened)."""
    if ann.effect is not Effect.READ:
        if name is not None and name.effect is not Effect.READ:
            # annotations say what a tool does, not which 6.3 category it is: take that from the name
            return Classification(ann.legs, ann.effect, name.category, ann.source, ann.detail)
        return ann
    own: frozenset[Leg] = NO_LEGS
    if name is not None and (name.effect is not Effect.READ or reading.noun_legs or name.source == "catalog"):
        own = name.legs  # a write's E, a fetch's U+E, the nouns' and the app's legs; not the P+U guess
    added = own - ann.legs
    if not added:
        return ann
    detail = f"{ann.detail}; the tool's name adds {_legs_text(added)} ({name.detail if name else ''})"
    return Classification(ann.legs | added, ann.effect, None, ann.source, detail)


def classify(
    definition: ToolDefinition,
    app: App | None,
    trust_annotations: bool,
    entry_legs: frozenset[Leg] | None,
    entry_effect: Effect | None,
    entry_category: str | None,
    entry_where: str | None,
) -> Classification:
    """Resolve a tool's classification by precedence; see the module docstring."""
    reading = read_name(definition)
    name = heuristic(definition, app, reading)
    ann = from_annotations(definition.annotations, reading.shape) if trust_annotations else None
    lower = _with_annotations(ann, name, reading) if ann is not None else name or UNKNOWN
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
    upstream's catalog app (declared with `app:`), else P+U.

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
