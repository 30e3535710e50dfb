"""Policy files: YAML and TOML, errors naming line and key, presets, the JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from policy import PRESETS, PolicyError, load_policy, load_preset
from policy.loader import check_policy_file, preset_text
from policy.schema import render_schema

SCHEMA_FILE = Path(__file__).parents[2] / "policy" / "schema.json"

YAML_OK = """\
name: t
upstreams:
  svc:
    action_control: read_only
    tools:
      get_x: {legs: [P], effect: read}
"""
TOML_OK = """\
name = "t"
[upstreams.svc]
action_control = "read_only"
[upstreams.svc.tools.get_x]
legs = ["P"]
effect = "read"
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_toml_give_the_same_policy(tmp_path: Path) -> None:
    a = load_policy(write(tmp_path, "p.yaml", YAML_OK))
    b = load_policy(write(tmp_path, "p.toml", TOML_OK))
    assert a.revision == b.revision
    assert a.origin and a.origin.endswith("p.yaml")


def test_error_names_line_and_key(tmp_path: Path) -> None:
    bad = YAML_OK.replace("action_control: read_only", "action_control: readonly")
    issues = check_policy_file(write(tmp_path, "p.yaml", bad))
    assert len(issues) == 1
    assert issues[0].line == 4 and issues[0].key == "upstreams.svc.action_control"
    assert "allow_all" in issues[0].message


def test_unknown_key_and_bad_leg(tmp_path: Path) -> None:
    bad = YAML_OK.replace("get_x: {legs: [P], effect: read}", "get_x: {legs: [X], effect: read, colour: red}")
    issues = {i.key: i for i in check_policy_file(write(tmp_path, "p.yaml", bad))}
    assert issues["upstreams.svc.tools.get_x.colour"].message == (
        "unknown key 'colour' in [upstreams.svc.tools.get_x]; known keys: legs, effect, category, conditions")
    assert issues["upstreams.svc.tools.get_x.colour"].line == 6
    assert issues["upstreams.svc.tools.get_x.legs[0]"].line == 6


def test_rule_errors_point_into_the_list(tmp_path: Path) -> None:
    text = "rules:\n  - id: a\n    action: allow\n  - id: b\n    action: allow\n    session_legs_any: [P]\n"
    issues = check_policy_file(write(tmp_path, "p.yaml", text))
    assert issues[0].key == "rules[1]" and issues[0].line == 4


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    issues = check_policy_file(write(tmp_path, "p.yaml", "mode: enforce\nstrict: true\nmode: monitor\n"))
    assert [(i.key, i.line, i.message) for i in issues] == [("mode", 3, "duplicate key")]


def test_syntax_error_has_a_line(tmp_path: Path) -> None:
    issues = check_policy_file(write(tmp_path, "p.yaml", "name: t\nupstreams: [\n"))
    assert issues[0].line is not None and "invalid YAML" in issues[0].message


def test_toml_errors_name_the_key(tmp_path: Path) -> None:
    issues = check_policy_file(write(tmp_path, "p.toml", 'mode = "loud"\n'))
    assert issues[0].key == "mode" and issues[0].line is None


def test_empty_and_missing_files(tmp_path: Path) -> None:
    assert "empty" in check_policy_file(write(tmp_path, "p.yaml", ""))[0].message
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_match_the_schema(name: str) -> None:
    policy = load_preset(name)
    assert policy.name == name
    jsonschema.validate(yaml.safe_load(preset_text(name)), json.loads(SCHEMA_FILE.read_text()))


def test_presets_differ_in_posture() -> None:
    lock, ctl, opn = (load_preset(n) for n in ("lockdown", "controlled", "open"))
    assert lock.model.strict and not ctl.model.strict and not opn.model.strict
    assert lock.first_use_scope == "principal_tool" and ctl.first_use_scope == "tool"
    assert lock.legs_scope == "principal"
    assert (lock.model.defaults.write, ctl.model.defaults.write, opn.model.defaults.write) == ("hold", "hold", "allow")
    assert lock.model.default_upstream.action_control == "read_only"


def test_unknown_preset() -> None:
    with pytest.raises(PolicyError, match="unknown preset"):
        load_preset("yolo")


def test_schema_file_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text() == render_schema(), (
        "policy/schema.json is stale: run `python -m gateway.cli.policy policy schema -o policy/schema.json`"
    )


def test_schema_rejects_what_the_model_rejects() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"mode": "loud"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"upstreams": {"a": {"bogus": 1}}}, schema)
