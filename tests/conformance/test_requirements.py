"""The 0.2 conformance suite's frozen requirement sets (2025-11-25 and 2026-07-28), direct and
through Triplock in front of the conformance fixture, against the explained baseline in
``expected_failures_requirements.txt``.

Runtime: each requirement set takes 5 to 12 seconds per target, so about 35 seconds for the four
runs (the project has no slow marker; the 0.1.16 suite's tests in test_conformance.py stay as they
are). Skips (fails in CI) without `npm ci` in tests/conformance, like the 0.1.16 tests.
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


@pytest.fixture(scope="module")
def triplock_url(fixture_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if _GATEWAY_MISSING is not None:
        skip_or_fail(f"gateway.cli.main does not import ({_GATEWAY_MISSING})")
    port = rc.free_port()
    config = tmp_path_factory.mktemp("requirements") / "triplock.toml"
    config.write_text(gateway_config_toml(port, "fx", fixture_url), encoding="utf-8")
    with triplock_serve(config, port) as url:
        yield url


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


@pytest.mark.parametrize("revision", rr.REVISIONS)
def test_fixture_directly(fixture_url: str, revision: str) -> None:
    check(rr.run_requirements(fixture_url, revision), "direct")


@pytest.mark.parametrize("revision", rr.REVISIONS)
def test_through_triplock(triplock_url: str, revision: str) -> None:
    check(rr.run_requirements(triplock_url, revision), "triplock")


def test_every_expected_failure_is_explained() -> None:
    entries = rr.load_expected()
    assert entries and all(why for why in entries.values())
    assert {where for (_, where, _) in entries} <= {"direct", "triplock"}
    assert {rev for (rev, _, _) in entries} <= set(rr.REVISIONS)


def test_the_pins_sit_side_by_side() -> None:
    """0.1.16 stays the active suite's pin; the 0.2 alpha is pinned next to it under its own alias."""
    import json

    deps = json.loads(Path(rc.HERE / "package.json").read_text(encoding="utf-8"))["dependencies"]
    assert deps["@modelcontextprotocol/conformance"] == "0.1.16"
    assert deps["conformance-0.2"] == "npm:@modelcontextprotocol/conformance@0.2.0-alpha.12"
