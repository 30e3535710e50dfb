"""adapters.upstreams.deadlines: the upstream call timeout, with asyncio.timeout's semantics."""

from __future__ import annotations

import asyncio

import pytest

from adapters.upstreams.deadlines import deadline


async def test_overrunning_block_raises_timeout_error() -> None:
    never = asyncio.Event()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(10):  # a guard: the test must not hang if the deadline never fires
            async with deadline(0.05):
                await never.wait()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the cancellation was ours and is gone


async def test_block_that_finishes_in_time_leaves_the_task_alone() -> None:
    async with deadline(5):
        await asyncio.sleep(0)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # would raise CancelledError if a cancellation were still pending


async def test_cancellation_from_outside_stays_a_cancellation() -> None:
    entered = asyncio.Event()

    async def body() -> None:
        async with deadline(30):
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(body())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_inner_deadline_fires_and_the_outer_block_carries_on() -> None:
    async with deadline(30):
        with pytest.raises(TimeoutError):
            async with deadline(0.05):
                await asyncio.Event().wait()
        await asyncio.sleep(0)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
