"""Loading policy files (YAML or TOML) and presets, with errors that name the line and the key.

This is the only module of `policy/` that reads files; it runs at load and reload, never per call.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from policy.catalog import APPS
from policy.config import FIRST_USE_CATEGORY, Conditions, PolicyFile, PromptEntry, ResourceEntry, ToolEntry
from policy.engine import CompiledPolicy
from policy.suggest import closest, unknown_key_message
from policy.vocabulary import NOUN_FAMILIES

PRESETS = ("lockdown", "controlled", "open")


@dataclass(frozen=True)
class Issue:
    """One problem in a policy file: where (key path, line) and what."""

    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.key or '(top level)'}: {self.message}"


class PolicyError(ValueError):
    """A policy file that cannot be loaded; `issues` lists every problem found."""

    def __init__(self, source: str, issues: list[Issue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(f"{source}: " + "; ".join(str(i) for i in issues))


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _yaml_line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Line of the deepest YAML node on the error's path (the key itself when it exists)."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _duplicate_keys(node: yaml.Node | None, path: tuple[int | str, ...] = ()) -> list[Issue]:
    # PyYAML keeps the last of duplicate keys silently; in a security policy that hides mistakes
    issues: list[Issue] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                issues.append(Issue(_key_path((*path, key.value)), "duplicate key", key.start_mark.line + 1))
            seen.add(key.value)
            issues.extend(_duplicate_keys(value, (*path, key.value)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            issues.extend(_duplicate_keys(item, (*path, index)))
    return issues


def _validation_issues(exc: ValidationError, root: yaml.Node | None) -> list[Issue]:
    issues = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = unknown_key_message(PolicyFile, loc)
        issues.append(Issue(_key_path(loc), message, _yaml_line(root, loc)))
    return issues


def parse_policy_text(text: str, source: str = "<policy>", fmt: str = "yaml") -> PolicyFile:
    """Parse and validate policy text ('yaml' also reads JSON; 'toml'); raises PolicyError."""
    root: yaml.Node | None = None
    data: Any
    if fmt == "toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(source, [Issue("", f"invalid TOML: {exc}")]) from None
    else:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise PolicyError(source, [Issue("", f"invalid YAML: {getattr(exc, 'problem', exc)}", line)]) from None
        dupes = _duplicate_keys(root)
        if dupes:
            raise PolicyError(source, dupes)
    if data is None:
        raise PolicyError(source, [Issue("", "the policy file is empty")])
    if not isinstance(data, dict):
        raise PolicyError(source, [Issue("", "a policy file must be a mapping at the top level", 1)])
    try:
        model = PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(source, _validation_issues(exc, root)) from None
    unknown = category_issues(model, root)
    if unknown:
        raise PolicyError(source, unknown)
    return model


# Every category a classification can give a call without the policy file's help: the catalog
# apps' write categories, the noun families' (policy.vocabulary), a payment (policy.classify, any
# write that moves money) and a tool's first use. Nothing an upstream sends sets a category
# (annotations say what a tool does, not its 6.3 category), so with the categories the policy
# file itself assigns this is every category a call can ever have.
BUILTIN_CATEGORIES = frozenset(
    {c for app in APPS for c in (*app.categories.values(), app.default_write_category) if c}
    | {c for family in NOUN_FAMILIES for c in family.categories.values()}
    | {"financial_transaction_any", FIRST_USE_CATEGORY}
)


def _file_conditions(model: PolicyFile) -> list[Conditions]:
    ups = [model.default_upstream, *model.upstreams.values()]
    found = [model.conditions, *(u.conditions for u in ups)]
    found += [t.conditions for u in ups for t in u.tools.values()]
    return [c for c in found if c is not None]


def known_categories(model: PolicyFile) -> frozenset[str]:
    """Every category a call can have under ``model``: the built-in ones and those the file assigns."""
    ups = [model.default_upstream, *model.upstreams.values()]
    entries: list[ToolEntry | ResourceEntry | PromptEntry] = []
    for u in ups:
        entries += [*u.tools.values(), *u.resources.values(), *u.prompts.values()]
    assigned = {e.category for e in entries}
    for cond in _file_conditions(model):
        assigned |= set(cond.internal_categories.values()) | {a.category for a in cond.amounts}
    return BUILTIN_CATEGORIES | {c for c in assigned if c}


def category_issues(model: PolicyFile, root: yaml.Node | None = None) -> list[Issue]:
    """Categories named by rules and the 6.3 lists that no call can ever have: each a typo or a
    category nothing classifies, so the rule (or the hold) would silently never apply.

    Why an error and not a warning: :func:`known_categories` is every category a classification
    can produce (the built-in vocabulary plus the file's own assignments), so such a name provably
    never matches; a hold rule that never matches is a hole, and a policy with one fails closed.
    The fix is to correct the name or to assign the category to a tool (``tools: {x: {category: ...}}``).
    """
    known = known_categories(model)
    named: list[tuple[tuple[int | str, ...], str]] = [
        (("approval_required_actions", i), c) for i, c in enumerate(model.approval_required_actions)
    ]
    named += [(("approval_logged_actions", i), c) for i, c in enumerate(model.approval_logged_actions)]
    named += [(("rules", i, "categories", j), c) for i, r in enumerate(model.rules) for j, c in enumerate(r.categories)]
    issues = []
    for loc, category in named:
        if category in known:
            continue
        suggestion = closest(category, known)
        hint = (f"did you mean {suggestion!r}?" if suggestion is not None
                else "assign it to a tool (upstreams.NAME.tools.TOOL.category) or remove it")
        issues.append(Issue(_key_path(loc), f"no call can have category {category!r}: {hint}", _yaml_line(root, loc)))
    return issues


def _format_for(path: Path) -> str:
    return "toml" if path.suffix.lower() == ".toml" else "yaml"


def load_policy(path: str | Path) -> CompiledPolicy:
    """Load, validate and compile a policy file (.yaml/.yml/.json or .toml); raises PolicyError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(str(p), [Issue("", f"cannot read: {exc}")]) from None
    return CompiledPolicy(parse_policy_text(text, str(p), _format_for(p)), origin=str(p))


def check_policy_file(path: str | Path) -> list[Issue]:
    """All issues in a policy file (empty when it loads)."""
    try:
        load_policy(path)
    except PolicyError as exc:
        return exc.issues
    return []


def preset_text(name: str) -> str:
    """The YAML text of a shipped preset: 'lockdown', 'controlled' or 'open'."""
    if name not in PRESETS:
        raise PolicyError(name, [Issue("", f"unknown preset; choose one of {', '.join(PRESETS)}")])
    return resources.files("policy").joinpath("presets", f"{name}.yaml").read_text(encoding="utf-8")


def load_preset(name: str) -> CompiledPolicy:
    """Load a shipped preset: 'lockdown', 'controlled' or 'open'."""
    return CompiledPolicy(parse_policy_text(preset_text(name), f"preset:{name}"), origin=f"preset:{name}")
