"""The single-stream figures: throughput, time to first response, a paced engine, cancel-to-kill latency.

Each runs the same client code against the bare server and the project's server, alternating between them
where it repeats, and returns a :class:`~benchmarks.report.Figure` (docs/performance.md gives the targets).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
import uuid
from dataclasses import dataclass

from .clients import Client
from .harness import Bench, peer_details, read_all
from .report import Figure, Metric, Target, latency_metrics, percentile

__all__ = ["cancel", "first_response", "paced", "throughput"]

PAYLOAD = 16  # bytes per item: the targets' "16-byte items"
PACE = 0.010  # seconds per item of the paced engine
PROBE_PACE = 0.005  # seconds per item of the cancel probe
# Seconds of deadline on top of what a call should take: bounds every call should a server stall.
SLACK = 30.0


@dataclass
class Run:
    """One flat-out stream: items/s, the messages the items came in, and the server's CPU use."""

    rate: float
    messages: int
    cpu_per_item: float  # server CPU seconds per item
    cpu_share: float  # server CPU seconds per second of the stream: near 1.0, the server was the limit


async def _rate(bench: Bench, client: Client, count: int, variant: str = "") -> Run:
    """Run one flat-out stream of ``count`` items and measure it."""
    server = bench.servers[client.kind]
    cpu = server.cpu_seconds()
    start = time.perf_counter()
    call = client.count(count, PAYLOAD, timeout=SLACK + count / 1000, variant=variant)
    items = messages = 0
    last = None
    async for message in call:
        items += client.items_in(message)
        messages += 1
        last = message
    elapsed = time.perf_counter() - start
    cpu = server.cpu_seconds() - cpu
    if items != count or not client.completed(last):
        raise RuntimeError(f"{client.kind}: a stream of {count} items delivered {items} (or did not complete)")
    return Run(items / elapsed, messages, cpu / items, cpu / elapsed)


async def throughput(bench: Bench) -> Figure:
    """(a) Items/s on one stream of a flat-out engine with 16-byte items; target: at least 20x bare."""
    s = bench.sizes
    runs: dict[str, list[Run]] = {"bare_write": [], "bare_generator": [], "project": []}
    async with bench.clients("bare") as (bare,), bench.clients("project") as (project,):
        # Warm both connections and code paths before measuring.
        await _rate(bench, bare, 1_000)
        await _rate(bench, project, 10_000)
        for _ in range(s.repeats):
            runs["bare_write"].append(await _rate(bench, bare, s.throughput_bare_items, "write"))
            runs["bare_generator"].append(await _rate(bench, bare, s.throughput_bare_items, "generator"))
            runs["project"].append(await _rate(bench, project, s.throughput_items))
    if bench.peer is not None:
        runs["peer"] = await _peer_rates(bench, s.throughput_peer_items, s.repeats)
    rates = {k: [r.rate for r in v] for k, v in runs.items()}
    medians = {k: statistics.median(v) for k, v in rates.items()}
    # The bare baseline is its faster handler style in this run: the stricter comparison.
    bare_rate = max(medians["bare_write"], medians["bare_generator"])
    return Figure(
        "throughput",
        "items/s, one stream, fast engine, 16-byte items",
        metrics=[
            Metric(
                "items/s",
                "items/s",
                medians["project"],
                bare_rate,
                Target("ratio", ">=", 20, ">= 20x bare"),
                peer=medians.get("peer"),
                peer_target=Target("ratio", ">=", 20, ">= 20x origin"),
            )
        ],
        details={
            **peer_details(bench),
            "peer_items_per_stream": s.throughput_peer_items,
            "rates": rates,
            "medians": medians,
            "bare_style_used": max(("bare_write", "bare_generator"), key=lambda k: medians[k]),
            "project_items_per_stream": s.throughput_items,
            "bare_items_per_stream": s.throughput_bare_items,
            "project_mean_items_per_message": s.throughput_items * s.repeats / sum(r.messages for r in runs["project"]),
            # Where the time goes: a server CPU share near 1.0 means the server (not the client) set the pace.
            "server_cpu_us_per_item": {k: statistics.median(r.cpu_per_item for r in v) * 1e6 for k, v in runs.items()},
            "server_cpu_share": {k: statistics.median(r.cpu_share for r in v) for k, v in runs.items()},
            "repeats": s.repeats,
        },
    )


async def _peer_rates(bench: Bench, items: int, repeats: int) -> list[Run]:
    """The peer's flat-out stream through its own client (one item per message), with its server's CPU."""
    assert bench.peer is not None
    await bench.peer.agent.call("throughput", items=min(items, 1_000))  # warm-up
    runs = []
    for _ in range(repeats):
        cpu = bench.peer.server.cpu_seconds()
        result = await bench.peer.agent.call("throughput", timeout=SLACK + items / 1000, items=items)
        cpu = bench.peer.server.cpu_seconds() - cpu
        runs.append(Run(result["rate"], items, cpu / items, cpu / result["elapsed_s"]))
    return runs


async def first_response(bench: Bench) -> Figure:
    """(b) Time to the first response of a one-item request, median and p99; target at most 1.1x bare (SPEC 7).

    The bare server's handler that also sends initial metadata of its own first (as the project's protocol
    requires: ``x-request-id`` and the rest) is timed beside, in the details: grpc.aio sends that as an operation
    of its own, and the difference is the protocol's share of the gap, not the implementation's.
    """
    times: dict[str, list[float]] = {"bare": [], "project": [], "bare_with_metadata": [], "project_again": []}
    async with bench.clients("bare") as (bare,), bench.clients("project") as (project,):
        for client in (bare, project):  # warm-up
            await read_all(client.count(1, PAYLOAD, timeout=SLACK), client)
        # Two passes, each alternating call by call between two servers (so that both see the same moments of a
        # noisy machine, and each server process every other call): the figure's, then the bare server's
        # handler with initial metadata against the project again, for the details.
        for pass_ in (
            (("bare", bare, ""), ("project", project, "")),
            (("bare_with_metadata", bare, "metadata"), ("project_again", project, "")),
        ):
            for _ in range(bench.sizes.first_response_calls):
                for kind, client, variant in pass_:
                    start = time.perf_counter()
                    first = None
                    async for _message in client.count(1, PAYLOAD, timeout=SLACK, variant=variant):
                        if first is None:
                            first = time.perf_counter() - start
                    assert first is not None
                    times[kind].append(first * 1000)
    target = Target("ratio", "<=", 1.1, "<= 1.1x")
    return Figure(
        "first_response",
        "time to first response, one-item request",
        metrics=[
            Metric("median", "ms", statistics.median(times["project"]), statistics.median(times["bare"]), target),
            Metric("p99", "ms", percentile(times["project"], 99), percentile(times["bare"], 99), target),
        ],
        details={
            "calls": bench.sizes.first_response_calls,
            # The second pass: the bare server sending initial metadata first, against the project again.
            "second_pass_ms": {
                kind: {"median": statistics.median(times[kind]), "p99": percentile(times[kind], 99)}
                for kind in ("bare_with_metadata", "project_again")
            },
        },
    )


@dataclass
class Paced:
    """One paced stream as the client saw it."""

    kind: str
    extra_ms: list[float]  # each gap between consecutive items beyond the pace
    transit_ms: list[float]  # each item from its making (server clock) to its arrival (client clock)
    coalesced: int  # items that shared a message with another


async def _paced_stream(client: Client, n: int) -> Paced:
    arrivals: list[float] = []
    transit: list[float] = []
    messages = 0
    async for message in client.stamped(n, PACE, timeout=SLACK + n * PACE):
        now = time.time()
        messages += 1
        stamps = client.stamps(message)
        arrivals.extend([now] * len(stamps))
        transit.extend((now - stamp) * 1000 for stamp in stamps)
    if len(arrivals) != n:
        raise RuntimeError(f"{client.kind}: the paced stream delivered {len(arrivals)} of {n} items")
    extra = [(b - a - PACE) * 1000 for a, b in itertools.pairwise(arrivals)]
    return Paced(client.kind, extra, transit, n - messages)


async def paced(bench: Bench) -> Figure:
    """(c) A paced engine (one item per 10 ms): delay added beyond the pace; target p99 under 1 ms.

    The gap beyond the pace also holds the event loop's timer slack (``asyncio.sleep`` overshoots by up to
    a millisecond: libuv and epoll time out in whole milliseconds), which the bare server pays alike. Each
    item also carries the time it was made, so its transit from engine to client is measured as well: that is
    where coalescing would show.
    """
    n = bench.sizes.paced_items
    async with bench.clients("bare") as (bare,), bench.clients("project") as (project,):
        # Both streams at once: a light load (100 items/s each), and both see the same hiccups of the machine.
        runs = {r.kind: r for r in await asyncio.gather(_paced_stream(bare, n + 1), _paced_stream(project, n + 1))}
    b, p = runs["bare"], runs["project"]
    p99_transit, bare_p99_transit = percentile(p.transit_ms, 99), percentile(b.transit_ms, 99)
    return Figure(
        "paced",
        "paced engine (10 ms per item): extra gap beyond the pace",
        metrics=[
            Metric("p50 extra gap", "ms", percentile(p.extra_ms, 50), percentile(b.extra_ms, 50)),
            Metric(
                "p99 extra gap",
                "ms",
                percentile(p.extra_ms, 99),
                percentile(b.extra_ms, 99),
            ),
            Metric("p50 transit", "ms", percentile(p.transit_ms, 50), percentile(b.transit_ms, 50)),
            Metric("p99 transit", "ms", p99_transit, bare_p99_transit),
            # What the project's server itself adds to an item's way out (buffer, writer task, coalescing): the
            # timer slack both servers share cancels out, which "extra gap" cannot separate.
            Metric(
                "p99 delay added",
                "ms",
                p99_transit - bare_p99_transit,
                None,
                Target("value", "<", 0.5, "< 0.5 ms"),
            ),
        ],
        details={
            "items": n,
            "pace_ms": PACE * 1000,
            "max_extra_ms": {r.kind: max(r.extra_ms) for r in runs.values()},
            "max_transit_ms": {r.kind: max(r.transit_ms) for r in runs.values()},
            # A paced engine's items should each leave alone: none waits to share a message.
            "items_coalesced": {r.kind: r.coalesced for r in runs.values()},
        },
    )


async def _cancel_probe(client: Client, request_id: str, rng: random.Random) -> float:
    """Start a probe, cancel it at a random point, and return the client's ``time.time()`` at the cancel."""
    call = client.probe(request_id, 100_000, PROBE_PACE, timeout=SLACK)
    # A random point: after 1-3 items, then part of a pace, so the engine is anywhere in its loop.
    wanted, got = rng.randint(1, 3), 0
    async for message in call:
        got += client.items_in(message)
        if got >= wanted:
            break
    await asyncio.sleep(rng.uniform(0, PROBE_PACE))
    cancelled = time.time()
    call.cancel()
    # Let the kill land before the next probe starts, so that probes do not overlap.
    await asyncio.sleep(0.01)
    return cancelled


async def cancel(bench: Bench) -> Figure:
    """(e) Cancel-to-kill: from the client's cancel to the engine's ``finally`` seeing the kill; p99 < 2 ms.

    The origin's runtime is measured through its own client, whose way to give up a stream is to drop it; its
    engine learns of it at its next ``yield`` (the probe yields every 5 ms), not at its ``await``.
    """
    rng = random.Random(7)
    latencies: dict[str, list[float]] = {}
    missing: dict[str, int] = {}
    n = bench.sizes.cancel_probes
    cancelled_at: dict[str, dict[str, float]] = {"bare": {}, "project": {}}
    async with bench.clients("bare") as (bare,), bench.clients("project") as (project,):
        for i in range(n):
            # Alternating probe by probe: both servers see the same moments of a noisy machine.
            for client in (bare, project):
                request_id = f"probe-{client.kind}-{i}-{uuid.uuid4().hex[:8]}"
                cancelled_at[client.kind][request_id] = await _cancel_probe(client, request_id, rng)
        await asyncio.sleep(0.2)  # the last kill's `finally` runs about a millisecond after its cancel
        for client in (bare, project):
            killed_at = await client.kill_times()
            sent = cancelled_at[client.kind]
            latencies[client.kind] = [(killed_at[r] - t) * 1000 for r, t in sent.items() if r in killed_at]
            missing[client.kind] = sum(1 for r in sent if r not in killed_at)
            if not latencies[client.kind]:
                raise RuntimeError(f"{client.kind}: no cancel probe recorded a kill")
    if bench.peer is not None:
        # Its client has no kill: dropping the response stream is how it gives up a stream (peer/client.py).
        noticed = await bench.peer.agent.call("cancel", timeout=SLACK + n, probes=n, pace=PROBE_PACE, seed=7)
        latencies["peer"], missing["peer"] = noticed["latencies_ms"], noticed["missing"]
    return Figure(
        "cancel",
        "cancel to engine killed (seen by the engine)",
        metrics=latency_metrics(latencies, Target("value", "<", 2.0, "< 2 ms")),
        details={
            **peer_details(bench),
            "probes": n,
            "kills_not_recorded": missing,
            "max_ms": {k: max(v) for k, v in latencies.items()},
        },
    )
