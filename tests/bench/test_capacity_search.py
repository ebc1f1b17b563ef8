"""The capacity search: doubling, then bisecting to within 10%, a number failing only when it fails twice, and
bounded by its time budget. The trial here is a rule, not a server: the search is what is under test (the
figure itself runs against real servers in the smoke test)."""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.capacity import MAX_GAP_MS, Trial, search


def _holding_up_to(limit: int, tried: list[int], hiccups: frozenset[int] = frozenset()) -> Trial:
    """A trial that holds ``limit`` streams and no more; the first try of each number in ``hiccups`` fails."""
    hiccupped: set[int] = set()

    async def trial(n: int) -> dict[str, Any]:
        tried.append(n)
        fails = n > limit or (n in hiccups and n not in hiccupped)
        hiccupped.add(n)
        gap = 2 * MAX_GAP_MS if fails else MAX_GAP_MS / 2
        return {"completed": n, "errors": {}, "p99_gap_ms": gap, "client_cpu_share": 0.5}

    return trial


def test_it_doubles_then_bisects_to_within_ten_percent() -> None:
    tried: list[int] = []
    found = asyncio.run(search(_holding_up_to(700, tried), 100, budget=60))
    assert tried[:4] == [100, 200, 400, 800]
    assert 700 * 0.9 <= found["streams_held"] <= 700 < found["fewest_failed"]
    assert found["fewest_failed"] - found["streams_held"] <= max(1, found["streams_held"] // 10)
    assert found["stopped_by"] == "within 10%"
    assert found["client_limited"] is False


def test_a_number_fails_only_when_it_fails_twice() -> None:
    tried: list[int] = []
    found = asyncio.run(search(_holding_up_to(700, tried, hiccups=frozenset({200})), 100, budget=60))
    assert tried[:4] == [100, 200, 200, 400]
    assert found["streams_held"] >= 630


def test_errors_or_missing_streams_fail_a_trial() -> None:
    async def trial(n: int) -> dict[str, Any]:
        return {"completed": n - 1, "errors": {"UNAVAILABLE": 1}, "p99_gap_ms": 10.0}

    found = asyncio.run(search(trial, 100, budget=60))
    assert found["streams_held"] == 0


def test_the_budget_bounds_the_search() -> None:
    tried: list[int] = []

    async def slow(n: int) -> dict[str, Any]:
        tried.append(n)
        await asyncio.sleep(0.05)
        return {"completed": n, "errors": {}, "p99_gap_ms": 1.0}

    found = asyncio.run(search(slow, 100, budget=0.12))
    assert len(tried) <= 3
    assert found["stopped_by"] == "time budget"
