"""One upstream's policy settings, compiled: its tool, resource and prompt tables, action-control
matchers and merged argument conditions."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Generic, TypeVar

from policy.catalog import App, app_for_upstream
from policy.conditions import merge_conditions, normalise_path
from policy.config import Conditions, PromptEntry, ResourceEntry, ToolEntry, UpstreamPolicy
from policy.globs import NameMatcher, compile_path_globs, is_glob, is_uri_glob, name_glob_regex, uri_glob_regex

EntryT = TypeVar("EntryT")


class EntryTable(Generic[EntryT]):
    """Name (or URI) -> entry: exact keys first, then globs in file order."""

    __slots__ = ("_exact", "_globs", "_uri", "_where")

    def __init__(
        self,
        entries: Mapping[str, EntryT],
        where: str,
        is_pattern: Callable[[str], bool],
        compile_glob: Callable[[str], re.Pattern[str]],
        uri: bool = False,
    ) -> None:
        self._where = where
        self._uri = uri  # URIs are full of dots: always name them as ['key'] in `where`
        self._exact: dict[str, EntryT] = {}
        self._globs: list[tuple[re.Pattern[str], str, EntryT]] = []
        for key, entry in entries.items():
            if is_pattern(key):
                self._globs.append((compile_glob(key), key, entry))
            else:
                self._exact[key] = entry

    def lookup(self, name: str) -> tuple[EntryT | None, str | None]:
        """The entry for `name` and where it is in the policy file; (None, None) when none matches."""
        found = self._exact.get(name)
        if found is not None:
            return found, f"{self._where}[{name!r}]" if self._uri else f"{self._where}.{name}"
        for regex, key, entry in self._globs:
            if regex.match(name):
                return entry, f"{self._where}[{key!r}]"
        return None, None


class UpstreamTable:
    """One upstream's settings, compiled: entry tables, action-control matchers, merged conditions."""

    def __init__(self, name: str, cfg: UpstreamPolicy, policy_conditions: Conditions, where: str) -> None:
        self.name = name
        self.cfg = cfg
        self.where = where
        self.app: App | None = app_for_upstream(name, cfg.app)
        self.tools: EntryTable[ToolEntry] = EntryTable(cfg.tools, f"{where}.tools", is_glob, name_glob_regex)
        self.resources: EntryTable[ResourceEntry] = EntryTable(
            cfg.resources, f"{where}.resources", is_uri_glob, uri_glob_regex, uri=True
        )
        self.prompts: EntryTable[PromptEntry] = EntryTable(cfg.prompts, f"{where}.prompts", is_glob, name_glob_regex)
        self.allowed = NameMatcher(cfg.actions_allowed)
        self.denied = NameMatcher(cfg.actions_denied)
        self.conditions = merge_conditions([policy_conditions, cfg.conditions])

    def entry(self, tool: str) -> tuple[ToolEntry | None, str | None]:
        """The policy entry for a tool (exact name first, then globs in file order)."""
        return self.tools.lookup(tool)

    @cached_property
    def read_conditions(self) -> Conditions:
        """The conditions that apply to resources and prompts: only the restrictions.

        Relaxations (internal recipients, allowlisted URLs dropping E/U) and amount thresholds
        describe what a tool call does; a prompt's arguments only fill in a text, so they may
        deny (a never-read path) but never make a resource or prompt look safer.
        """
        return self.conditions.model_copy(update={"org_domains": [], "url_allowlist": [], "amounts": []})

    @cached_property
    def _deny_paths(self) -> re.Pattern[str] | None:
        return compile_path_globs(self.conditions.deny_read_paths)

    def denies_uri(self, uri: str) -> bool:
        """True when a resource URI names a never-read path (`deny_read_paths`).

        The whole URI is normalised as a path (a `file://` prefix is stripped), so '**/.env' also
        catches 'workspace://repo/.env'; that errs on the side of denying."""
        deny = self._deny_paths
        return deny is not None and deny.fullmatch(normalise_path(uri)) is not None
