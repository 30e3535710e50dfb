"""Import the JSONC config packs of seed 6.2 (action control) and 6.3 (approval policy) into a
Triplock policy document.

Mapping:
- 6.2 `apps.<app>` -> `upstreams.<app>` (enabled, action_control, actions_allowed/denied,
  new_actions_default), with `app: <app>` when the built-in catalog knows it (an upstream's name
  alone never makes it a catalog app, so the pack's naming is stated explicitly), and
  `custom_mcp_servers` -> `default_upstream` (the settings for every upstream not listed).
- 6.3 `approval_required_actions` entries marked "human_required" -> `approval_required_actions`
  (with `mcp_first_invocation_of_tool` also switching `first_use` on);
  `approval_logged_actions` entries marked "logged" -> `approval_logged_actions`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from policy.catalog import lookup_app
from policy.config import FIRST_USE_CATEGORY, PolicyFile

_APP_KEYS = {"enabled", "action_control", "actions_allowed", "actions_denied", "new_actions_default"}
_DEFAULT_UPSTREAM_APP = "custom_mcp_servers"


class ImportProblem(ValueError):
    """A pack whose shape this importer does not understand."""


def _upstream(app: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise ImportProblem(f"apps.{app}: expected an object")
    unknown = set(spec) - _APP_KEYS
    if unknown:
        raise ImportProblem(f"apps.{app}: unknown keys {sorted(unknown)}")
    return {k: (list(v) if isinstance(v, list) else v) for k, v in spec.items()}


def _categories(section: Any, marker: str, where: str) -> list[str]:
    if not isinstance(section, Mapping):
        raise ImportProblem(f"{where}: expected an object")
    return [name for name, value in section.items() if str(value).lower() == marker]


def pack_to_policy(packs: Iterable[Mapping[str, Any]], name: str = "imported") -> dict[str, Any]:
    """Merge one or more packs into a policy document (validated against the policy schema)."""
    doc: dict[str, Any] = {"version": 1, "name": name}
    for pack in packs:
        recognised = False
        if "apps" in pack:
            recognised = True
            apps = pack["apps"]
            if not isinstance(apps, Mapping):
                raise ImportProblem("apps: expected an object")
            for app, spec in apps.items():
                settings = _upstream(app, spec)
                if app == _DEFAULT_UPSTREAM_APP:
                    doc["default_upstream"] = settings
                else:
                    known = lookup_app(app)
                    if known is not None:
                        settings["app"] = known.name
                    doc.setdefault("upstreams", {})[app] = settings
        if "approval_required_actions" in pack:
            recognised = True
            required = _categories(pack["approval_required_actions"], "human_required", "approval_required_actions")
            doc["approval_required_actions"] = required
            doc["first_use"] = {"enabled": FIRST_USE_CATEGORY in required}
        if "approval_logged_actions" in pack:
            recognised = True
            doc["approval_logged_actions"] = _categories(
                pack["approval_logged_actions"], "logged", "approval_logged_actions"
            )
        if not recognised:
            raise ImportProblem(
                "not a known config pack: expected 'apps' (6.2) or 'approval_required_actions' / "
                "'approval_logged_actions' (6.3)"
            )
    PolicyFile.model_validate(doc)  # fail here, not when the gateway loads the output
    return doc
