"""Namespacing, name limits, deterministic order, pagination and routing of the aggregated catalog."""

from __future__ import annotations

import re

import pytest

from gateway.mcp.catalog import BadCursor, Catalog, UpstreamListing, decode_cursor, encode_cursor, exposed_name

VALID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def test_plain_names_are_prefixed() -> None:
    assert exposed_name("crm", "update_record") == "crm__update_record"
    assert exposed_name("", "update_record") == "update_record"


@pytest.mark.parametrize("name", ["x" * 80, "tool.with.dots", "spaces in name", "ünïcode"])
def test_long_or_odd_names_become_valid_unique_and_stable(name: str) -> None:
    a = exposed_name("upstream", name)
    assert VALID.match(a), a
    assert a == exposed_name("upstream", name)  # stable
    assert a != exposed_name("upstream", name + "2")  # unique


def listing(*tools: str) -> UpstreamListing:
    return UpstreamListing(tools=[{"name": t, "inputSchema": {"type": "object"}} for t in tools])


def test_order_is_deterministic_and_a_clash_is_exposed_from_neither_upstream() -> None:
    a = Catalog([("a", "", listing("zeta", "alpha")), ("b", "", listing("alpha", "beta"))])
    b = Catalog([("a", "", listing("alpha", "zeta")), ("b", "", listing("beta", "alpha"))])
    names = [t["name"] for t in a.page("tools", None)["tools"]]
    assert names == ["beta", "zeta"] == [t["name"] for t in b.page("tools", None)["tools"]]
    assert "alpha" not in a.tools
    assert [c.describe() for c in a.collisions] == [
        "tool name 'alpha' is refused: upstreams 'a' and 'b' both publish it"]


def test_pagination_walks_every_tool_once() -> None:
    cat = Catalog([("big", "big", listing(*[f"t{i:04d}" for i in range(450)]))])
    seen: list[str] = []
    cursor = None
    while True:
        page = cat.page("tools", cursor)
        seen += [t["name"] for t in page["tools"]]
        cursor = page.get("nextCursor")
        if cursor is None:
            break
    assert len(seen) == 450 == len(set(seen))


def test_bad_cursors_are_refused() -> None:
    assert decode_cursor(encode_cursor(5)) == 5
    for bad in ["nonsense!", "bzo6LTE=", encode_cursor(3)[:-2] + "zz"]:
        with pytest.raises(BadCursor):
            decode_cursor(bad)


def test_tool_view_can_hide_and_reannotate() -> None:
    def view(upstream: str, tool: dict) -> dict | None:  # type: ignore[type-arg]
        return None if tool["name"] == "secret" else {**tool, "annotations": {"readOnlyHint": False}}

    cat = Catalog([("u", "u", listing("open", "secret"))], view)
    assert list(cat.tools) == ["u__open"]
    assert cat.page("tools", None)["tools"][0]["annotations"] == {"readOnlyHint": False}


def test_resources_route_by_uri_and_template() -> None:
    lst = UpstreamListing(
        resources=[{"uri": "mem://a", "name": "a"}], templates=[{"uriTemplate": "notes://{id}", "name": "n"}]
    )
    cat = Catalog([("one", "one", lst), ("two", "two", UpstreamListing())])
    assert cat.owner_of_uri("mem://a") == "one"
    assert cat.owner_of_uri("notes://42") == "one"
    assert cat.owner_of_uri("other://x") is None
