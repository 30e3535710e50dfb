"""One upstream's policy settings, compiled: its tool table, action-control matchers and
merged argument conditions."""

from __future__ import annotations

from typing import Any

from policy.catalog import App, app_for_upstream
from policy.conditions import merge_conditions
from policy.config import Conditions, ToolEntry, UpstreamPolicy
from policy.globs import NameMatcher, is_glob, name_glob_regex


class UpstreamTable:
    """One upstream's settings, compiled: tool table, action-control matchers, merged conditions."""

    def __init__(self, name: str, cfg: UpstreamPolicy, policy_conditions: Conditions, where: str) -> None:
        self.name = name
        self.cfg = cfg
        self.where = where
        self.app: App | None = app_for_upstream(name, cfg.app)
        self.exact: dict[str, ToolEntry] = {}
        self.globs: list[tuple[Any, str, ToolEntry]] = []
        for key, entry in cfg.tools.items():
            if is_glob(key):
                self.globs.append((name_glob_regex(key), key, entry))
            else:
                self.exact[key] = entry
        self.allowed = NameMatcher(cfg.actions_allowed)
        self.denied = NameMatcher(cfg.actions_denied)
        self.conditions = merge_conditions([policy_conditions, cfg.conditions])

    def entry(self, tool: str) -> tuple[ToolEntry | None, str | None]:
        """The policy entry for a tool (exact name first, then globs in file order)."""
        found = self.exact.get(tool)
        if found is not None:
            return found, f"{self.where}.tools.{tool}"
        for regex, key, entry in self.globs:
            if regex.match(tool):
                return entry, f"{self.where}.tools[{key!r}]"
        return None, None
