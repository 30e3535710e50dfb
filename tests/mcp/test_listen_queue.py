"""A slow ``subscriptions/listen`` client loses no change: repeats merge while they wait, so the queue
is bounded by what a stream can hold (three list kinds and its resource URIs), and nothing is dropped."""

from __future__ import annotations

from gateway.mcp.subscriptions import LIST_FILTERS, MAX_LISTEN_URIS, QUEUE_LIMIT, Listener

UPDATED = "notifications/resources/updated"


async def test_repeats_merge_while_waiting_and_every_distinct_change_is_kept() -> None:
    listener = Listener("sub-1", {name: True for name in LIST_FILTERS})
    uris = [f"test://n/{i}" for i in range(MAX_LISTEN_URIS)]
    for _ in range(5):  # a burst: every URI changes five times, every list three times, before the client reads
        for uri in uris:
            listener.offer(listener.tagged(UPDATED, {"uri": uri}))
        for _name, (_kinds, method) in LIST_FILTERS.items():
            listener.offer(listener.tagged(method))
    assert (len(LIST_FILTERS), MAX_LISTEN_URIS, QUEUE_LIMIT) == (3, 64, 67)
    assert listener.queue.qsize() == QUEUE_LIMIT  # each distinct change once; none dropped
    seen = [await listener.next() for _ in range(QUEUE_LIMIT)]
    assert [m["params"]["uri"] for m in seen if m["method"] == UPDATED] == uris
    assert [m["method"] for m in seen if m["method"] != UPDATED] == [m for _k, m in LIST_FILTERS.values()]
    assert all(m["params"]["_meta"] == {"io.modelcontextprotocol/subscriptionId": "sub-1"} for m in seen)
    # Once sent, the same change is news again.
    listener.offer(listener.tagged(UPDATED, {"uri": uris[0]}))
    assert (await listener.next())["params"]["uri"] == uris[0]
