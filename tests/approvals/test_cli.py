"""``triplock approvals ...`` against the routes served for real on a loopback port."""

from __future__ import annotations

import argparse
import json
import time

import pytest

from adapters.stores.memory_store import MemoryStore
from gateway.cli.approvals import register

from .conftest import TOKENS, LiveServer, Recorder, held_call


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="triplock")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def alice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIPLOCK_APPROVER_TOKEN", TOKENS["alice"])


def test_list_show_approve_deny(live: tuple[LiveServer, MemoryStore, Recorder], alice: None,
                                capsys: pytest.CaptureFixture[str]) -> None:
    server, store, recorder = live
    first, second = held_call(), held_call(tool="post_to_chat", upstream="chat", principal="agent-9")
    server.run(store.create_approval(first))
    server.run(store.create_approval(second))
    url = ["--url", server.url]

    assert run(["approvals", "list", *url]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["ID", "STATE", "PRINCIPAL", "TOOL", "LEGS", "CREATED", "EXPIRES"]
    assert first.id in out and second.id in out and "PU>PUE" in out

    assert run(["approvals", "list", *url, "--upstream", "chat", "--json"]) == 0
    assert [a["id"] for a in json.loads(capsys.readouterr().out)] == [second.id]

    assert run(["approvals", "show", first.id, *url]) == 0
    out = capsys.readouterr().out
    assert f"id:          {first.id}" in out and "trifecta.complete" in out and "<script>alert(1)</script>" in out

    assert run(["approvals", "approve", first.id, *url, "--reason", "expected"]) == 0
    until = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(first.expires_at))
    assert capsys.readouterr().out.strip() == f"approved: {first.id} by alice, scope once until {until}"
    assert run(["approvals", "deny", second.id, *url, "-r", "no chat today", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "denied"

    assert server.run(store.get_approval(first.id)).state == "approved"  # type: ignore[union-attr]
    assert [e for e, _ in recorder.events] == ["triplock.approval.granted", "triplock.approval.denied"]

    assert run(["approvals", "list", *url, "--state", "pending"]) == 0
    assert capsys.readouterr().out.strip() == "no approvals match"
    assert run(["approvals", "list", *url, "--state", "all", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_errors_have_messages_and_exit_codes(live: tuple[LiveServer, MemoryStore, Recorder], alice: None,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    server, store, _ = live
    a = held_call()
    server.run(store.create_approval(a))
    url = ["--url", server.url]

    assert run(["approvals", "show", "NOPE", *url]) == 1
    assert "HTTP 404" in capsys.readouterr().err
    assert run(["approvals", "approve", a.id, *url]) == 0
    capsys.readouterr()
    assert run(["approvals", "deny", a.id, *url, "-r", "late"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 409" in err and "decided by alice" in err

    monkeypatch.setenv("OTHER_TOKEN", "wrong")
    assert run(["approvals", "list", *url, "--token-env", "OTHER_TOKEN"]) == 1
    assert "HTTP 401" in capsys.readouterr().err
    monkeypatch.delenv("TRIPLOCK_APPROVER_TOKEN")
    assert run(["approvals", "list", *url]) == 2
    assert "TRIPLOCK_APPROVER_TOKEN" in capsys.readouterr().err


def test_approve_with_a_scope(live: tuple[LiveServer, MemoryStore, Recorder], alice: None,
                              capsys: pytest.CaptureFixture[str]) -> None:
    server, store, recorder = live
    broad, session, bad = held_call(), held_call(tool="read_all"), held_call(tool="wipe")
    for a in (broad, session, bad):
        server.run(store.create_approval(a))
    url = ["--url", server.url]

    assert run(["approvals", "approve", broad.id, *url, "--scope", "principal_tool", "--minutes", "10", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["scope"], shown["scope_until"]) == ("principal_tool", shown["decided_at"] + 600)
    assert run(["approvals", "show", broad.id, *url]) == 0
    until = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(shown["scope_until"]))
    assert f"scope:       principal_tool until {until}" in capsys.readouterr().out
    assert run(["approvals", "approve", session.id, *url, "--scope", "session"]) == 0
    assert ", scope session until " in capsys.readouterr().out
    assert [f["scope"] for e, f in recorder.events if e == "triplock.approval.granted"] == ["principal_tool", "session"]

    assert run(["approvals", "approve", bad.id, *url, "--scope", "principal_tool", "--minutes", "61"]) == 1
    assert "HTTP 400: minutes must be a whole number from 1 to 60 for scope principal_tool" in capsys.readouterr().err
    assert run(["approvals", "approve", bad.id, *url, "--scope", "principal_tool"]) == 2
    assert "--scope principal_tool needs --minutes N" in capsys.readouterr().err
    assert run(["approvals", "approve", bad.id, *url, "--minutes", "5"]) == 2
    assert "--minutes goes with --scope principal_tool only" in capsys.readouterr().err
    assert server.run(store.get_approval(bad.id)).state == "pending"  # type: ignore[union-attr]
    with pytest.raises(SystemExit):
        run(["approvals", "approve", bad.id, "--scope", "everything"])


def test_unreachable_gateway(alice: None, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert run(["approvals", "list", "--url", f"http://127.0.0.1:{port}", "--timeout", "2"]) == 3
    assert "cannot reach the gateway" in capsys.readouterr().err


def test_deny_needs_a_reason() -> None:
    with pytest.raises(SystemExit):
        run(["approvals", "deny", "X"])


def test_terminal_output_cannot_be_driven_by_the_agent(live: tuple[LiveServer, MemoryStore, Recorder], alice: None,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Escape sequences, bidi overrides and look-alike hosts in what an agent wrote are shown, not obeyed."""
    server, store, _ = live
    a = held_call(principal="agent-7\x1b]0;pwned\x07\x1b[2J", tool="send\u202eliam.exe",
                  arguments={"to": "boss@ex\u0430mple.com", "note": "line1\nforged row\x9b31m"})
    server.run(store.create_approval(a))
    url = ["--url", server.url]
    assert run(["approvals", "list", *url]) == 0
    out = capsys.readouterr().out
    assert "agent-7⟨U+001B⟩]0;pwned⟨U+0007⟩⟨U+001B⟩[2J" in out and "send⟨U+202E⟩liam.exe" in out
    assert len(out.splitlines()) == 2  # the header and one row: no forged lines
    assert run(["approvals", "show", a.id, *url]) == 0
    out = capsys.readouterr().out
    assert "principal:   agent-7⟨U+001B⟩]0;pwned⟨U+0007⟩⟨U+001B⟩[2J" in out
    assert '"to": "boss@ex\u0430mple.com ⟨xn--exmple-4nf.com · mixes Cyrillic+Latin · looks like example.com⟩"' in out
    assert '"note": "line1\\nforged row⟨U+009B⟩31m"' in out
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in out
