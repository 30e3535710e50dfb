"""Seed 6.4 trifecta inventory report."""

from __future__ import annotations

import pytest

from policy import Leg
from policy.report import ReportInputError, classify_agent, read_inventory, render_table

from .conftest import FIXTURES


def test_fixture_inventory() -> None:
    rows = {r.agent_id: r for r in read_inventory((FIXTURES / "agents.csv").read_text())}
    assert rows["agt_001"].trifecta  # Gmail alone spans all three
    assert not rows["agt_002"].trifecta and rows["agt_002"].legs == {Leg.P}
    assert rows["agt_003"].trifecta and rows["agt_003"].apps == ("web_search", "browser", "notion")
    assert rows["agt_004"].trifecta  # GitHub (P, E) + Jira (P, U)
    assert rows["agt_005"].trifecta and rows["agt_005"].unknown_apps == ("acme-internal-mcp",)
    assert not rows["agt_006"].trifecta and rows["agt_006"].legs == frozenset()


@pytest.mark.parametrize("apps", ["Slack;Google Drive", "slack|google-drive", "slack google_drive", "Slack, Drive"])
def test_separators(apps: str) -> None:
    row = classify_agent("a", "n", "o", apps)
    assert row.apps == ("slack", "google_drive") and row.legs == {Leg.P, Leg.U, Leg.E}


def test_two_legs_only() -> None:
    row = classify_agent("a", "n", "o", "Google Drive; SharePoint; Slack")
    assert row.trifecta is True  # Slack is U+E, drives are P
    row = classify_agent("a", "n", "o", "Google Drive; Box")
    assert row.trifecta is False


def test_table_and_missing_columns() -> None:
    rows = read_inventory("agent_id,agent_name,owner_email,connected_apps\nx,X,o@e.com,Gmail\n")
    table = render_table(rows)
    assert "YES" in table and "1 of 1" in table
    with pytest.raises(ReportInputError, match="connected_apps"):
        read_inventory("agent_id,agent_name,owner_email\n")
