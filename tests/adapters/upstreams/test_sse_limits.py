"""The SSE parser: any chunking gives the same events; a line or an event over its bound is an error."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.ports.sse import SseEvent, SseTooLarge, iter_sse

STREAM = (
    b": comment\r\nevent: message\r\nid: 7\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n"
    b"data: second\n\nevent: other\ndata: x\n\n"
)
EXPECTED = [SseEvent("message", '{"a":\n1}', "7"), SseEvent("message", "second", "7"), SseEvent("other", "x", "7")]


async def chunks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def events(data: bytes, size: int, **limits: int) -> list[SseEvent]:
    return [e async for e in iter_sse(chunks_of(data, size), **limits)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 16, 1000])
async def test_any_chunking_gives_the_same_events(size: int) -> None:
    assert await events(STREAM, size) == EXPECTED


@pytest.mark.parametrize("size", [1, 100, 4096])
async def test_a_line_without_an_end_is_refused_at_the_bound(size: int) -> None:
    seen = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal seen
        yield b"data: "
        while True:
            seen += size
            yield b"y" * size

    with pytest.raises(SseTooLarge) as err:
        async for _ in iter_sse(endless(), max_line=10_000):
            pass
    assert str(err.value) == "an SSE line over 10000 bytes" and err.value.what == "line"
    assert seen <= 10_000 + size  # refused as soon as it went over, not at the end of the stream


async def test_a_line_at_the_bound_passes_and_one_byte_more_does_not() -> None:
    line = b"data: " + b"z" * 94  # 100 bytes
    assert await events(line + b"\n\n", 7, max_line=100) == [SseEvent("message", "z" * 94, None)]
    with pytest.raises(SseTooLarge):
        await events(line + b"z\n\n", 7, max_line=100)
    with pytest.raises(SseTooLarge):  # in one chunk too
        await events(line + b"z\n\n", 1000, max_line=100)


async def test_an_event_of_many_short_lines_is_refused_at_its_bound() -> None:
    many = b"".join(b"data: " + b"q" * 94 + b"\n" for _ in range(20))  # 20 lines of 100 bytes, no blank line
    assert len(await events(many + b"\n", 64, max_event=2000)) == 1
    with pytest.raises(SseTooLarge) as err:
        await events(many + b"data: q\n\n", 64, max_event=2000)
    assert str(err.value) == "an SSE event over 2000 bytes" and err.value.what == "event"
    # The bound is per event: many events, each under it, are fine.
    assert len(await events(many.replace(b"\n", b"\n\n"), 64, max_event=2000)) == 20


async def test_a_long_line_in_small_chunks_is_assembled_once() -> None:
    """4 MiB in 64-byte chunks: each byte is searched once (the old parser rescanned the buffer per chunk)."""
    body = b"data: " + b"w" * (4 * 1024 * 1024) + b"\n\n"
    [event] = await events(body, 64, max_line=8 * 1024 * 1024)
    assert len(event.data) == 4 * 1024 * 1024
