"""The 0.2 conformance suite's frozen requirement sets (2025-11-25 and 2026-07-28), direct and
through Triplock in front of the conformance fixture, against the explained baseline in
``expected_failures_requirements.txt``.

The fixture serves both eras (``fixture_input_required.py``), so Triplock is run in front of it
twice (the ``WHERE`` of the baseline):

* ``triplock``: ``protocol = "auto"``; the fixture takes ``initialize``, so Triplock speaks
  2025-11-25 to it and turns its mid-call elicitation/sampling/roots requests into input-required
  results for 2026-07-28 clients;
* ``triplock-stateless``: ``protocol = "2026-07-28"``; Triplock passes the fixture's
  input-required results through to 2026-07-28 clients, and asks session clients the fixture's
  questions mid-call.

Runtime: a requirement set takes 2 to 7 seconds per target, so about 30 seconds for the six runs
(the project has no slow marker). Skips (fails in CI) without `npm ci` in tests/conformance, like
the 0.1.16 tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance import run_conformance as rc
from tests.conformance import run_requirements as rr
from tests.conformance.test_conformance import (
    _GATEWAY_MISSING,
    gateway_config_toml,
    skip_or_fail,
    triplock_serve,
)

pytestmark = [pytest.mark.timeout(600)]


@pytest.fixture(autouse=True, scope="module")
def _suite_installed() -> None:
    if not rr.is_installed():
        skip_or_fail(f"conformance 0.2 not installed: run `npm ci` in {rc.HERE} (the CI script does)")


@pytest.fixture(scope="module")
def fixture_url() -> Iterator[str]:
    with rc.fixture_server(rc.free_port()) as url:
        yield url


# WHERE -> the fixture's `protocol` setting in Triplock's config.
TRIPLOCK_ERAS = {"triplock": "auto", "triplock-stateless": "2026-07-28"}
# Not scored for a revision, but Triplock must pass them wherever the fixture does.
MUST_PASS_UNSCORED = {"2026-07-28": {"http-header-validation"}, "2025-11-25": set()}


@pytest.fixture(scope="module", params=sorted(TRIPLOCK_ERAS))
def triplock_url(
    request: pytest.FixtureRequest, fixture_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    if _GATEWAY_MISSING is not None:
        skip_or_fail(f"gateway.cli.main does not import ({_GATEWAY_MISSING})")
    where: str = request.param
    port = rc.free_port()
    config = tmp_path_factory.mktemp("requirements") / "triplock.toml"
    toml = gateway_config_toml(port, "fx", fixture_url) + f'protocol = "{TRIPLOCK_ERAS[where]}"\n'
    config.write_text(toml, encoding="utf-8")
    with triplock_serve(config, port) as url:
        yield where, url


def expected(revision: str, where: str) -> set[str]:
    return {name for (rev, at, name) in rr.load_expected() if rev == revision and at == where}


def check(run: rr.RequirementsRun, where: str) -> None:
    print(run.describe())
    want = expected(run.revision, where)
    assert run.scored, run.output
    assert run.failed == want, (
        f"{run.revision} {where}: newly failing {sorted(run.failed - want)}, now passing {sorted(want - run.failed)}"
        f"\n{run.describe()}"
    )
    unscored_failing = {n for n in MUST_PASS_UNSCORED[run.revision] if not run.results[n].passed}
    assert not unscored_failing, f"{run.revision} {where}: {sorted(unscored_failing)} fail\n{run.describe()}"


@pytest.mark.parametrize("revision", rr.REVISIONS)
def test_fixture_directly(fixture_url: str, revision: str) -> None:
    check(rr.run_requirements(fixture_url, revision), "direct")


@pytest.mark.parametrize("revision", rr.REVISIONS)
def test_through_triplock(triplock_url: tuple[str, str], revision: str) -> None:
    where, url = triplock_url
    check(rr.run_requirements(url, revision), where)


def test_every_expected_failure_is_explained() -> None:
    entries = rr.load_expected()
    assert entries and all(why for why in entries.values())
    assert {where for (_, where, _) in entries} <= {"direct", *TRIPLOCK_ERAS}
    assert {rev for (rev, _, _) in entries} <= set(rr.REVISIONS)


def test_the_pins_sit_side_by_side() -> None:
    """0.1.16 stays the active suite's pin; the 0.2 alpha is pinned next to it under its own alias."""
    import json

    deps = json.loads(Path(rc.HERE / "package.json").read_text(encoding="utf-8"))["dependencies"]
    assert deps["@modelcontextprotocol/conformance"] == "0.1.16"
    assert deps["conformance-0.2"] == "npm:@modelcontextprotocol/conformance@0.2.0-alpha.12"
