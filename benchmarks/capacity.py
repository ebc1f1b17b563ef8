"""The capacity figure: the most streams at 20 items/s that one server process holds, p99 gap under 2x the pace.

A trial opens N streams at once, each of ``capacity_items`` items 50 ms apart, and holds if every stream
completes, none errors and the p99 of all inter-item gaps (every gap of every stream) is under 100 ms. The
search doubles N from ``capacity_start`` until a trial fails, then bisects between the most that held and the
fewest that failed until they are within 10% of each other, within ``capacity_seconds`` per server (a trial
started before the budget runs out finishes). A number of streams fails only when two trials of it fail.

The servers are searched one after the other, each pinned to the same CPU; the load comes from the harness's
process (project, bare: its streams spread over ``channels`` connections) or from the peer's own client
process, pinned to the other CPU. Each trial records the client's CPU share: near 1.0 at the boundary, the
client and not the server set the number, and the figure says so.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from .harness import Bench, peer_details
from .load import paced_streams, peer_paced
from .report import Figure, Metric, Target

__all__ = ["Trial", "capacity", "held", "search"]

PACE = 0.050  # 20 items/s per stream
MAX_GAP_MS = 2 * PACE * 1000
PRECISION = 0.10  # the search stops when the most that held and the fewest that failed are this close
MAX_STREAMS = 16_000  # bounds a trial's memory on both sides, should a server hold everything
CLIENT_LIMIT = 0.9  # a client CPU share above this at the boundary: the client may be the limit
# Tries of a number of streams before it counts as failed: one hiccup of a shared machine (a neighbour's job
# taking the CPU for 100 ms) fails a trial without being the server's limit; a limit fails every try.
ATTEMPTS = 2

Trial = Callable[[int], Awaitable[dict[str, Any]]]


def held(run: dict[str, Any], n: int) -> bool:
    """Whether a trial of ``n`` streams held: all completed, none errored, p99 gap under 2x the pace."""
    gap = run["p99_gap_ms"]
    return bool(run["completed"] == n and not run["errors"] and gap is not None and gap < MAX_GAP_MS)


async def search(trial: Trial, start: int, budget: float) -> dict[str, Any]:
    """Double, then bisect, the streams of ``trial`` within ``budget`` seconds; the most that held and how."""
    deadline = time.perf_counter() + budget
    most, fewest_failed, n = 0, None, start
    trials: list[dict[str, Any]] = []
    stopped_by = "time budget"
    while time.perf_counter() < deadline:
        ok = False
        for _attempt in range(ATTEMPTS):
            run = await trial(n)
            ok = held(run, n)
            trials.append({"streams": n, "held": ok, **run})
            if ok or time.perf_counter() >= deadline:
                break
        if ok:
            most = n
        else:
            fewest_failed = n
        if fewest_failed is None:
            if n >= MAX_STREAMS:
                stopped_by = f"held the cap of {MAX_STREAMS} streams"
                break
            n = min(2 * n, MAX_STREAMS)
            continue
        if fewest_failed - most <= max(1, int(most * PRECISION)):
            stopped_by = f"within {PRECISION:.0%}"
            break
        n = (most + fewest_failed) // 2
    boundary = [t for t in trials if t["streams"] == fewest_failed]
    client_share = boundary[-1].get("client_cpu_share") if boundary else None
    return {
        "streams_held": most,
        "fewest_failed": fewest_failed,
        "stopped_by": stopped_by,
        "client_cpu_share_at_boundary": client_share,
        "client_limited": client_share is not None and client_share > CLIENT_LIMIT,
        "trials": trials,
    }


def _harness_trial(bench: Bench, kind: str) -> Trial:
    async def trial(n: int) -> dict[str, Any]:
        async with bench.clients(kind, bench.sizes.channels) as clients:
            server, cpu, client_cpu = bench.servers[kind], bench.servers[kind].cpu_seconds(), time.process_time()
            run = await paced_streams(clients, n, bench.sizes.capacity_items, PACE)
            run["server_cpu_share"] = (server.cpu_seconds() - cpu) / run["wall_s"]
            run["client_cpu_share"] = (time.process_time() - client_cpu) / run["wall_s"]
        return run

    return trial


def _peer_trial(bench: Bench) -> Trial:
    async def trial(n: int) -> dict[str, Any]:
        return await peer_paced(bench, n, bench.sizes.capacity_items, PACE)

    return trial


async def capacity(bench: Bench) -> Figure:
    """The most streams at 20 items/s each server holds; target: the project at least 0.9x the bare server."""
    s = bench.sizes
    found = {
        kind: await search(_harness_trial(bench, kind), s.capacity_start, s.capacity_seconds)
        for kind in ("project", "bare")
    }
    if bench.peer is not None:
        found["peer"] = await search(_peer_trial(bench), s.capacity_start, s.capacity_seconds)
    peer = found.get("peer")
    return Figure(
        "capacity",
        f"most streams at {1 / PACE:.0f} items/s held by one server process, p99 gap < {MAX_GAP_MS:.0f} ms",
        metrics=[
            Metric(
                "streams held",
                "streams",
                found["project"]["streams_held"],
                found["bare"]["streams_held"],
                Target("ratio", ">=", 0.9, ">= 0.9x bare"),
                peer=None if peer is None else peer["streams_held"],
            )
        ],
        details={
            **peer_details(bench),
            "items_per_stream": s.capacity_items,
            "pace_ms": PACE * 1000,
            "budget_s_per_server": s.capacity_seconds,
            "connections": s.channels,
            **found,
        },
    )
