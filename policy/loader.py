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

from policy.config import PolicyFile
from policy.engine import CompiledPolicy

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
            message = "unknown key"
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
        return PolicyFile.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(source, _validation_issues(exc, root)) from None


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
