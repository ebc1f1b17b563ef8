"""The output budget: small messages pass free, large ones share a bound, oldest first, cancellable."""

from __future__ import annotations

import asyncio

import pytest

from engine_runtime.server.budget import FREE_BYTES, OutputBudget

pytestmark = pytest.mark.asyncio

BIG = FREE_BYTES + 1


async def test_small_messages_pass_without_accounting() -> None:
    budget = OutputBudget(limit=BIG)
    await budget.acquire(BIG)
    await asyncio.wait_for(budget.acquire(FREE_BYTES), 1)  # not held up by the spent budget
    assert budget.held == BIG


async def test_large_messages_wait_oldest_first_and_a_cancelled_waiter_leaves_the_queue() -> None:
    budget = OutputBudget(limit=2 * BIG)
    await budget.acquire(2 * BIG)
    first = asyncio.ensure_future(budget.acquire(BIG))
    gone = asyncio.ensure_future(budget.acquire(BIG))
    second = asyncio.ensure_future(budget.acquire(BIG))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    assert not first.done() and not second.done()
    budget.release(2 * BIG)
    await asyncio.wait_for(asyncio.gather(first, second), 1)
    assert budget.held == 2 * BIG


async def test_a_message_larger_than_the_budget_goes_alone() -> None:
    budget = OutputBudget(limit=BIG)
    await asyncio.wait_for(budget.acquire(10 * BIG), 1)
    later = asyncio.ensure_future(budget.acquire(BIG))
    await asyncio.sleep(0)
    assert not later.done()
    budget.release(10 * BIG)
    await asyncio.wait_for(later, 1)


async def test_a_waiter_cancelled_just_before_its_grant_is_skipped() -> None:
    budget = OutputBudget(limit=BIG)
    await budget.acquire(BIG)
    gone = asyncio.ensure_future(budget.acquire(BIG))
    after = asyncio.ensure_future(budget.acquire(BIG))
    await asyncio.sleep(0)
    gone.cancel()
    budget.release(BIG)  # before the cancelled waiter has run: it must not be granted, nor break the release
    await asyncio.wait_for(after, 1)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert budget.held == BIG
