"""API keys: created once, stored as hashes, bound to a principal with groups, revocable live."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gateway.cli import keys as cli_keys
from gateway.identity.api_keys import KeyStore, parse_key
from gateway.identity.authenticators import ApiKeyAuthenticator, Challenges
from gateway.identity.principal import AuthFailure, Principal
from gateway.identity.roles import AccessPolicy


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="triplock")
    cli_keys.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def authenticator(path: Path) -> ApiKeyAuthenticator:
    return ApiKeyAuthenticator(KeyStore(path), AccessPolicy(), Challenges("http://127.0.0.1:1/mcp"),
                               reload_seconds=0.0)


async def test_create_list_revoke_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.json"
    assert run_cli("keys", "create", "--principal", "codex-ci", "--groups", "agents-run,eng", "--file", str(path)) == 0
    key = capsys.readouterr().out.strip()
    key_id = parse_key(key)
    assert key_id is not None
    stored = path.read_text()
    assert key not in stored and key.split("_", 2)[2] not in stored, "the key itself is never stored"
    assert (path.stat().st_mode & 0o777) == 0o600

    auth = authenticator(path)
    who = await auth.authenticate({"authorization": f"Bearer {key}"})
    assert isinstance(who, Principal)
    assert (who.id, who.agent, who.via) == ("codex-ci", "codex-ci", "api_key")
    assert who.groups == {"agents-run", "eng"} and who.roles == {"agents-run"}

    assert run_cli("keys", "list", "--json", "--file", str(path)) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["principal"], r["revoked_at"]) for r in listed] == [(key_id, "codex-ci", None)]
    assert "hash" not in listed[0]

    assert run_cli("keys", "revoke", key_id, "--file", str(path)) == 0
    refused = await auth.authenticate({"authorization": f"Bearer {key}"})
    assert isinstance(refused, AuthFailure) and refused.status == 401
    assert "revoked" in refused.body["error_description"]
    assert run_cli("keys", "revoke", "nosuchkey000", "--file", str(path)) == 1


async def test_wrong_secret_unknown_id_and_malformed_keys_are_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key, _ = store.create("bot", ("agents-run",))
    auth = authenticator(store.path)
    prefix, key_id, secret = key.split("_", 2)
    wrong_secret = f"{prefix}_{key_id}_{'A' * len(secret)}"
    unknown_id = f"{prefix}_{'0' * 12}_{secret}"
    for bad in (wrong_secret, unknown_id, "tlk_short", key + "x" * 200):
        failure = await auth.authenticate({"authorization": f"Bearer {bad}"})
        assert isinstance(failure, AuthFailure) and failure.status == 401, bad
    assert isinstance(await auth.authenticate({"authorization": f"Bearer {key}"}), Principal)


async def test_a_bad_key_file_keeps_the_last_good_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    key, _ = store.create("bot", ())
    auth = authenticator(store.path)
    assert isinstance(await auth.authenticate({"authorization": f"Bearer {key}"}), Principal)
    store.path.write_text("{ not json")
    assert isinstance(await auth.authenticate({"authorization": f"Bearer {key}"}), Principal)


def test_names_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="principal"):
        KeyStore(tmp_path / "k.json").create("has space", ())
    assert run_cli("keys", "create", "--principal", "ok", "--groups", "bad group", "--file",
                   str(tmp_path / "k.json")) == 2
