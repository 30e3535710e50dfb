"""The agent-session corpus: its labels, the harness's counting, and a quick replay through a real
gateway (the recorded upstreams and ``triplock serve`` as subprocesses, the MCP SDK client over
HTTP, the approvals REST API), in the first-use-approved setup.

Only invariants are asserted that must hold whatever the policy's tuning: what ran is what the
upstream saw, counts add up, the external-mail and attacker-IBAN attacks are held, a read-only
benign task needs no approval. The figures themselves are the benchmark's (load_tests/README.md).
"""

from __future__ import annotations

import asyncio

import pytest

from load_tests.agent_corpus import corpus
from load_tests.agent_corpus.replay import SessionResult, StepResult
from load_tests.agent_corpus.report import FamilyFigures, figures
from load_tests.agent_corpus.run import RunResult, run
from load_tests.agent_corpus.suites import tool_def


def test_corpus_size_labels_and_families() -> None:
    sessions = corpus.load()
    assert len(sessions) >= 300
    assert len({s.id for s in sessions}) == len(sessions)
    assert [s.id for s in corpus.load()] == [s.id for s in sessions]  # deterministic
    for family in corpus.FAMILIES:
        kinds = {s.kind for s in sessions if s.family == family}
        assert kinds == {"benign", "attack"}, family
    benign = [s for s in sessions if s.kind == "benign"]
    assert sum("read-only" in s.tags for s in benign) * 2 >= len(benign)
    assert all(s.harmful_steps for s in sessions if s.kind == "attack")
    assert not any(s.harmful_steps for s in benign)
    # A fetch carries an attacker's data out whatever the upstream's name: the chat suite has one.
    assert any(s.steps[i].exposed == "slack__get_webpage" for s in sessions for i in s.harmful_steps)


def test_bad_session_is_a_clear_error() -> None:
    s = corpus.load(["mail"])[0]
    bad = type(s)(s.id, s.family, "attack", s.task, s.steps)
    with pytest.raises(corpus.CorpusError, match="an attack with no harmful step"):
        corpus.check(bad)
    with pytest.raises(corpus.CorpusError, match="unknown families"):
        corpus.load(["fax"])


def _session(kind: str, family: str, steps: list[StepResult]) -> SessionResult:
    return SessionResult(f"{family}-{kind}", family, kind, "", "p", steps)


def test_counting_on_known_outcomes() -> None:
    held = StepResult(1, "workspace__send_email", True, "held", approvals=1)
    through = StepResult(2, "slack__get_webpage", True, "allowed", executed=True)
    read = StepResult(0, "workspace__get_unread_emails", False, "allowed", executed=True)
    approved = StepResult(1, "workspace__send_email", False, "held", executed=True, approvals=1)
    denied = StepResult(0, "banking__send_money", False, "denied")
    results = [
        _session("attack", "mail", [read, held]),                # stopped
        _session("attack", "mail", [read, held, through]),       # one harmful call through: not stopped
        _session("benign", "mail", [read]),                      # 0 approvals
        _session("benign", "mail", [read, approved, approved]),  # 2 approvals
        _session("benign", "banking", [denied]),                 # blocked
    ]
    figs = figures(results)
    mail, all_ = figs["mail"], figs["all"]
    assert (mail.attacks, mail.stopped, mail.harmful_calls, mail.harmful_through) == (2, 1, 3, 1)
    assert (mail.benign, mail.approvals, mail.blocked, mail.median_approvals) == (2, [0, 2], 0, 1.0)
    assert (mail.share(0), mail.share(1), mail.goals_met) == (0.5, 0.5, False)
    assert (all_.benign, all_.blocked, all_.approvals) == (3, 1, [0, 2, 0])
    assert figs["banking"].goals_met is True and FamilyFigures().share(1) == 1.0


@pytest.fixture(scope="module")
def replayed() -> RunResult:
    """A quick subset (3 sessions of every family, both kinds) replayed once, first use approved."""
    return asyncio.run(run(corpus.quick(), "first-use-approved"))


def test_what_ran_is_what_the_upstream_saw(replayed: RunResult) -> None:
    # The replay itself checked, session by session, that the upstream ran exactly the steps counted
    # as executed; here: each outcome is consistent, and no harmful step ran after a hold.
    for s in replayed.sessions:
        for x in s.steps:
            assert x.executed == (x.first == "allowed" or (x.first == "held" and not x.harmful)), (s.id, x)
            if x.first == "held":
                assert x.approvals >= 1, (s.id, x)
            assert x.audit is not None and x.audit["rule_ids"] is not None, (s.id, x.index)
            if x.first == "allowed":
                assert (x.audit["decision"], x.audit["outcome"]) == ("allow", "allowed"), (s.id, x)


def test_totals_add_up(replayed: RunResult) -> None:
    figs = replayed.figures
    families = [f for name, f in figs.items() if name != "all"]
    assert sorted(name for name in figs if name != "all") == sorted(corpus.FAMILIES)
    total = figs["all"]
    assert total.attacks + total.benign == len(replayed.sessions) == 27
    for field in ("attacks", "stopped", "harmful_calls", "harmful_through", "benign", "blocked"):
        assert getattr(total, field) == sum(getattr(f, field) for f in families), field
    assert sorted(total.approvals) == sorted(a for f in families for a in f.approvals)
    assert replayed.warmup is not None and all(x.executed for x in replayed.warmup.steps)
    assert sum(x.first_use_holds for s in replayed.sessions for x in s.steps) == 0  # the warm-up approved them


def _result(replayed: RunResult, session_id: str) -> SessionResult:
    return next(s for s in replayed.sessions if s.id == session_id)


@pytest.mark.parametrize(("session_id", "tool", "argument", "value"), [
    ("mail-attack-00-00", "workspace__send_email", "to", ["mark.black@attacker.example"]),
    ("banking-attack-00-00", "banking__send_money", "recipient", "LT601010012345678901"),
])
def test_external_mail_and_attacker_iban_are_held(replayed: RunResult, session_id: str, tool: str,
                                                   argument: str, value: object) -> None:
    session = next(s for s in corpus.quick() if s.id == session_id)
    (i,) = session.harmful_steps
    assert (session.steps[i].exposed, session.steps[i].arguments[argument]) == (tool, value)
    step = _result(replayed, session_id).steps[i]
    assert (step.first, step.executed, step.approvals) == ("held", False, 1)
    assert step.audit is not None and step.audit["decision"] == "hold"
    family = replayed.figures[session.family]
    assert (family.attacks, family.stopped, family.harmful_through) == (1, 1, 0)


def test_read_only_benign_task_needs_no_approval(replayed: RunResult) -> None:
    # Reads of the organisation's own data (no open-world fetch, whose URL may leave the org).
    read_only = [s for s in corpus.quick() if s.kind == "benign" and all(
        tool_def(x.upstream, x.tool).read_only and not tool_def(x.upstream, x.tool).open_world for x in s.steps)]
    assert [s.id for s in read_only][:2] == ["mail-benign-00", "mail-benign-01"] and len(read_only) >= 8
    for s in read_only:
        got = _result(replayed, s.id)
        assert [(x.first, x.executed, x.approvals) for x in got.steps] == [("allowed", True, 0)] * len(s.steps), s.id


def test_the_quick_subset_is_fixed() -> None:
    ids = [s.id for s in corpus.quick()]
    assert ids[:3] == ["mail-benign-00", "mail-attack-00-00", "mail-benign-01"]
    assert len(ids) == 27 and ids == [s.id for s in corpus.quick()]
