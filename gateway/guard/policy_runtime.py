"""The live policy of a gateway process: loaded once, profiles cached, swapped atomically on reload.

``policy/`` decides; this module only holds the current :class:`~policy.CompiledPolicy`
and the tool profiles computed from it, and shapes ``tools/list`` from the policy's
view (hidden tools dropped, annotations re-emitted from Triplock's classification,
never the upstream's claims unchecked).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gateway.config import PolicyConfig
from policy import CompiledPolicy, PolicyError, ToolDefinition, ToolProfile, load_policy, load_preset

log = logging.getLogger("triplock.policy")
_MAX_RESOURCE_PROFILES = 10_000


def load_configured_policy(cfg: PolicyConfig) -> CompiledPolicy:
    """The policy file when one is configured, else the named preset. Raises PolicyError."""
    if cfg.file is not None:
        return load_policy(Path(cfg.file))
    return load_preset(cfg.preset)


class PolicyRuntime:
    """Current policy plus the profile of every catalogued tool."""

    def __init__(self, cfg: PolicyConfig, policy: CompiledPolicy | None = None) -> None:
        self._cfg = cfg
        self.policy = policy or load_configured_policy(cfg)
        self._profiles: dict[tuple[str, str, str], tuple[dict[str, Any], ToolProfile]] = {}
        # Resource URIs are unbounded (templates), so this cache is cleared when it grows past a bound.
        self._resources: dict[tuple[str, str, str], ToolProfile] = {}

    @property
    def revision(self) -> str:
        return self.policy.revision

    def file_stamp(self) -> tuple[float, int] | None:
        """(mtime, size) of the policy file, None for a preset or a missing file: what the watcher compares."""
        if self._cfg.file is None:
            return None
        try:
            st = Path(self._cfg.file).stat()
        except OSError:
            return None
        return st.st_mtime, st.st_size

    def reload(self) -> tuple[str, str]:
        """Load the policy again and swap it in; returns (old, new) revision. Keeps the old one on error."""
        new = load_configured_policy(self._cfg)
        old = self.policy
        self.policy = new  # one reference swap: every call sees either the old or the new policy
        self._profiles = {}
        self._resources = {}
        return old.revision, new.revision

    def profile(self, upstream: str, definition: dict[str, Any]) -> ToolProfile:
        """The (cached) profile of one upstream tool definition under the current policy."""
        name = str(definition.get("name", ""))
        key = (upstream, name, self.policy.revision)
        cached = self._profiles.get(key)
        if cached is not None and cached[0] == definition:
            return cached[1]
        profile = self.policy.profile(upstream, ToolDefinition.from_mcp(definition))
        self._profiles[key] = (definition, profile)
        return profile

    def prompt_profile(self, upstream: str, definition: dict[str, Any]) -> ToolProfile:
        """The (cached) profile of one upstream prompt under the current policy."""
        name = "prompt:" + str(definition.get("name", ""))
        key = (upstream, name, self.policy.revision)
        cached = self._profiles.get(key)
        if cached is not None and cached[0] == definition:
            return cached[1]
        profile = self.policy.prompt_profile(upstream, definition)
        self._profiles[key] = (definition, profile)
        return profile

    def resource_profile(self, upstream: str, uri: str) -> ToolProfile:
        """The (cached) profile of one resource URI of an upstream under the current policy."""
        key = (upstream, uri, self.policy.revision)
        profile = self._resources.get(key)
        if profile is None:
            if len(self._resources) >= _MAX_RESOURCE_PROFILES:
                self._resources = {}
            profile = self._resources[key] = self.policy.resource_profile(upstream, uri)
        return profile

    def tool_view(self, upstream: str, definition: dict[str, Any]) -> dict[str, Any] | None:
        """The tool as agents see it: None when hidden, else with Triplock's annotations."""
        try:
            profile = self.profile(upstream, definition)
        except (PolicyError, ValueError, TypeError) as exc:
            log.warning("tool %s of %s cannot be classified (%s): hidden", definition.get("name"), upstream, exc)
            return None
        if not self.policy.visible(profile):
            return None
        upstream_annotations = definition.get("annotations")
        title = upstream_annotations.get("title") if isinstance(upstream_annotations, dict) else None
        annotations: dict[str, Any] = dict(profile.mcp_annotations)
        if isinstance(title, str):
            annotations["title"] = title
        return {**definition, "annotations": annotations}
