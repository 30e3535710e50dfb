"""Tool pins as the catalog sees them, and the one way a changed definition is re-approved.

The guarded path pins a tool's definition hash on its first successful call and denies calls
once the upstream's definition differs (``pin.changed``). This module keeps the catalog honest
about it: a tool whose current definition differs from its pin is *withheld* from listings (its
new description is the rug pull's injection vector; the agent could not call it anyway) until an
admin has seen the diff and approved the new definition, which re-pins it.

Pins live in the store; the catalog is built synchronously, so :class:`PinBook` keeps them in
memory: loaded before each upstream listing is turned into a catalog (``on_listing``) and every
second by the app's watcher (so a re-pin taken through another gateway process shows here too).
Definitions are saved in the store by hash as the catalog first sees them, so a pin set by any
process can later be shown next to the current definition.

A tool nobody has reviewed yet (no pin, no first-use record) is *new*: an admin can approve it
once for everyone (:meth:`PinBook.approve` on a new tool), which records its first use (scope
``tool``: the key ``UPSTREAM__TOOL``) and pins the definition the admin saw, so no agent's first
call of it waits for a human. Under ``first_use.scope: principal_tool`` each principal's first
call is still held (that scope asks for it); the approval pins the definition all the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gateway.guard.policy_runtime import PolicyRuntime
from gateway.mcp.catalog import CatalogEntry, UpstreamListing
from gateway.ports.store import Store, StoreUnavailable
from gateway.telemetry.audit import EventType
from policy import PolicyError, ToolDefinition
from policy.explain import pin_diff

log = logging.getLogger("triplock.pins")

Repin = Callable[[str, str, str, str], Awaitable[None]]
"""``repin(upstream, tool, definition_hash, by)``: the guard's write-through ``set_pin``."""
Audit = Callable[..., Any]
_REVIEW_LEGS = "legs:pins-review"  # a legs key nothing writes: new_tools reads first use and pins only


@dataclass(frozen=True, slots=True)
class ChangedTool:
    """A tool whose current definition is not the one pinned; withheld until re-approved."""

    upstream: str
    tool: str
    exposed: str
    pinned_hash: str
    current_hash: str
    definition: dict[str, Any]  # the current one, as the upstream lists it

    def to_json(self) -> dict[str, Any]:
        return {"upstream": self.upstream, "tool": self.tool, "exposed": self.exposed,
                "pinned_hash": self.pinned_hash, "current_hash": self.current_hash}


@dataclass(frozen=True, slots=True)
class NewTool:
    """A listed tool with no pin and no first-use record: nobody has reviewed it yet."""

    upstream: str
    tool: str
    exposed: str
    effect: str  # read, write or destructive, as the policy classifies it
    current_hash: str
    definition: dict[str, Any]  # as the upstream lists it: untrusted text

    def to_json(self) -> dict[str, Any]:
        return {"upstream": self.upstream, "tool": self.tool, "exposed": self.exposed, "effect": self.effect,
                "current_hash": self.current_hash, "current_definition": self.definition}


@dataclass(frozen=True, slots=True)
class PinReview:
    """What an admin sees before approving: both definitions and their unified diff."""

    changed: ChangedTool
    pinned_definition: dict[str, Any] | None  # None: pinned before definitions were kept
    diff: str

    def to_json(self) -> dict[str, Any]:
        return {**self.changed.to_json(), "pinned_definition": self.pinned_definition,
                "current_definition": self.changed.definition, "diff": self.diff}


@dataclass(frozen=True, slots=True)
class ApproveResult:
    """The outcome of one approval attempt, in HTTP terms (200, 404, 409, 503)."""

    status: int
    code: str  # approved, approved_new, not_found, not_changed, stale, unavailable
    message: str


class PinBook:
    """In-memory pins for the catalog; lists, reviews and approves changed tool definitions."""

    def __init__(
        self,
        store: Store,
        policy: PolicyRuntime,
        *,
        entries: Callable[[], Iterable[CatalogEntry]],
        rebuild: Callable[[], Awaitable[None]],
        repin: Repin,
        forget_cached: Callable[[], None],
        audit: Audit | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self._entries = entries  # the live catalog's tools (listed or withheld)
        self._rebuild = rebuild
        self._repin = repin
        self._forget_cached = forget_cached  # the guard's pin cache, dropped when a pin changed elsewhere
        self.audit = audit
        self.pins: dict[tuple[str, str], str] = {}
        self._saved: set[str] = set()  # definition hashes this process knows the store has
        self._reported: set[tuple[str, str, str, str]] = set()

    # -- keeping the memory current ----------------------------------------------------------------
    async def load(self) -> bool:
        """Read every pin from the store; True when they differ from what was in memory."""
        try:
            pins = await self.store.get_pins()
        except StoreUnavailable as exc:
            log.error("cannot load tool pins (%s): listings keep the pins last loaded", exc)
            return False
        if pins == self.pins:
            return False
        if any(pins.get(key) != digest for key, digest in self.pins.items()):
            self._forget_cached()  # a pin was replaced (another process re-approved): calls must re-read
        self.pins = pins
        return True

    async def on_listing(self, upstream: str, listing: UpstreamListing) -> None:
        """Before a fresh listing becomes the catalog: current pins, and its definitions kept by hash."""
        await self.load()
        fresh: dict[str, dict[str, Any]] = {}
        for definition in listing.tools:
            digest = self._hash(upstream, definition)
            if digest is not None and digest not in self._saved:
                fresh[digest] = definition
        if not fresh:
            return
        try:
            await self.store.save_definitions(fresh)
            self._saved.update(fresh)
        except StoreUnavailable as exc:
            log.error("cannot keep tool definitions of %s (%s): a later diff may lack them", upstream, exc)

    async def watch(self) -> None:
        """One round of the app's watcher: reload, and rebuild the catalog if any pin changed."""
        if await self.load():
            await self._rebuild()

    # -- what the catalog asks (synchronous) -----------------------------------------------------
    def withhold(self, upstream: str, definition: dict[str, Any]) -> bool:
        """True when the tool is pinned, the policy enforces pins on it, and its definition changed.

        Reported (log and ``triplock.tool.definition_changed``) once per process and change.
        """
        name = str(definition.get("name", ""))
        pinned = self.pins.get((upstream, name))
        if pinned is None:
            return False
        try:
            profile = self.policy.profile(upstream, definition)
        except (PolicyError, ValueError, TypeError):
            return False  # the policy's own view hides an unclassifiable tool already
        if not profile.plan.pins or profile.definition_hash == pinned:
            return False
        # Monitor mode blocks nothing and hides nothing (the call is allowed too): only reported.
        withheld = profile.plan.mode != "monitor"
        key = (upstream, name, pinned, profile.definition_hash)
        if key not in self._reported:
            self._reported.add(key)
            log.warning("tool %r of upstream %r changed since it was pinned (%s -> %s)%s", name, upstream, pinned,
                        profile.definition_hash, ": withheld from listings until an admin approves the new definition"
                        if withheld else " (monitor mode: still listed)")
            if self.audit is not None:
                try:
                    # seen_in: the catalog's one record per change (a denied call records its own).
                    self.audit(EventType.TOOL_DEFINITION_CHANGED, upstream=upstream, tool=name, seen_in="catalog",
                               pinned_hash=pinned, current_hash=profile.definition_hash, withheld=withheld)
                except Exception:
                    log.exception("audit of a changed tool definition failed")
        return withheld

    # -- what admins see and do --------------------------------------------------------------------
    def changed(self) -> list[ChangedTool]:
        """Every tool of the live catalog withheld because its definition changed, by exposed name."""
        out = []
        for entry in self._entries():
            pinned = self.pins.get((entry.upstream, entry.name))
            current = self._hash(entry.upstream, entry.definition)
            if not entry.listed and pinned is not None and current is not None and pinned != current:
                out.append(ChangedTool(entry.upstream, entry.name, entry.exposed, pinned, current, entry.definition))
        return sorted(out, key=lambda c: c.exposed)

    def find(self, upstream: str, tool: str) -> ChangedTool | None:
        """The changed tool ``tool`` of ``upstream``, if it is one."""
        return next((c for c in self.changed() if (c.upstream, c.tool) == (upstream, tool)), None)

    async def review(self, changed: ChangedTool) -> PinReview:
        """Both definitions and the diff. Raises StoreUnavailable."""
        pinned = await self.store.get_definition(changed.pinned_hash)
        # Pinned before definitions were kept: the whole current definition shows as added.
        old = ToolDefinition.from_mcp(pinned) if pinned is not None else ToolDefinition(name=changed.tool)
        return PinReview(changed, pinned, pin_diff(old, ToolDefinition.from_mcp(changed.definition)))

    async def new_tools(self) -> list[NewTool]:
        """Listed tools with no pin and no first-use record (scope ``tool``), by exposed name.

        One store read per unpinned tool, concurrently. Raises StoreUnavailable.
        """
        candidates = [e for e in self._entries() if e.listed and (e.upstream, e.name) not in self.pins]
        states = await asyncio.gather(*(
            self.store.call_state(_REVIEW_LEGS, f"{e.upstream}__{e.name}", e.upstream, e.name) for e in candidates
        ))
        out = []
        for entry, state in zip(candidates, states, strict=True):
            if state.tool_used_before or state.pinned_hash is not None:
                continue
            try:
                profile = self.policy.profile(entry.upstream, entry.definition)
            except (PolicyError, ValueError, TypeError):
                continue  # unclassifiable: the policy hides it, so it is not in the catalog anyway
            out.append(NewTool(entry.upstream, entry.name, entry.exposed, profile.effect.value,
                               profile.definition_hash, entry.definition))
        return sorted(out, key=lambda n: n.exposed)

    async def approve(self, upstream: str, tool: str, expected_hash: str, by: str) -> ApproveResult:
        """Re-pin ``tool`` to its current definition, if that is the one the admin reviewed; a tool
        with no pin yet is approved as new (:meth:`approve_new`)."""
        changed = self.find(upstream, tool)
        if changed is None:
            entry = next((e for e in self._entries() if (e.upstream, e.name) == (upstream, tool)), None)
            if entry is not None and entry.listed and (upstream, tool) not in self.pins:
                return await self.approve_new(upstream, tool, entry.definition, expected_hash, by)
            if entry is not None:
                return ApproveResult(409, "not_changed", "This tool's definition matches its pin; nothing to approve.")
            return ApproveResult(404, "not_found", "No such tool in the catalog (is its upstream up?).")
        if changed.current_hash != expected_hash:
            return ApproveResult(409, "stale", "The definition changed again since you reviewed it; review the new "
                                               f"diff (current hash {changed.current_hash}).")
        try:
            await self._repin(upstream, tool, changed.current_hash, by)
        except StoreUnavailable:
            return ApproveResult(503, "unavailable", "The state store is unavailable; nothing was re-pinned.")
        self.pins[(upstream, tool)] = changed.current_hash
        log.warning("tool %r of upstream %r re-pinned by %s: %s -> %s", tool, upstream, by, changed.pinned_hash,
                    changed.current_hash)
        if self.audit is not None:
            try:
                self.audit(EventType.PIN_UPDATED, upstream=upstream, tool=tool, by=by,
                           previous_hash=changed.pinned_hash, definition_hash=changed.current_hash)
            except Exception:
                log.exception("audit of a re-pin failed")
        await self._rebuild()  # listed again; clients hear list_changed
        return ApproveResult(200, "approved", f"Approved by {by}: {changed.exposed} is listed and callable again.")

    async def approve_new(
        self, upstream: str, tool: str, definition: dict[str, Any], expected_hash: str, by: str
    ) -> ApproveResult:
        """Approve a tool nobody reviewed, for everyone: record its first use and pin the reviewed definition."""
        current = self._hash(upstream, definition)
        if current is None:
            return ApproveResult(404, "not_found", "No such tool in the catalog (is its upstream up?).")
        if current != expected_hash:
            return ApproveResult(409, "stale", "The definition is not the one you reviewed; review it again "
                                               f"(current hash {current}).")
        try:
            if current not in self._saved:  # so a later change can be shown as a diff against it
                await self.store.save_definitions({current: definition})
                self._saved.add(current)
            await self.store.mark_used(f"{upstream}__{tool}")
            await self._repin(upstream, tool, current, by)
        except StoreUnavailable:
            return ApproveResult(503, "unavailable", "The state store is unavailable; nothing was approved.")
        self.pins[(upstream, tool)] = current
        log.warning("new tool %r of upstream %r approved for everyone by %s and pinned: %s", tool, upstream, by,
                    current)
        if self.audit is not None:
            try:
                self.audit(EventType.PIN_UPDATED, upstream=upstream, tool=tool, by=by, first_use=True,
                           definition_hash=current)
            except Exception:
                log.exception("audit of a new tool's approval failed")
        return ApproveResult(200, "approved_new", f"Approved by {by}: tool {tool!r} of {upstream!r} is approved for "
                                                  "everyone and its definition is pinned.")

    def _hash(self, upstream: str, definition: dict[str, Any]) -> str | None:
        try:
            return self.policy.profile(upstream, definition).definition_hash
        except (PolicyError, ValueError, TypeError):
            return None
