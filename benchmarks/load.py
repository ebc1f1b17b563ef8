"""The many-stream figures: 1,000 concurrent paced streams, memory per open stream, 1 vs 2 workers.

The streams are spread over several connections (``Sizes.channels``), as they would come from several clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from typing import Any

import grpc
import psutil

from .clients import Call, Client
from .harness import Bench, peer_details, read_all
from .procs import ServerFailed, ServerProcess
from .report import Figure, Metric, Target, percentile

__all__ = ["concurrent", "memory", "paced_streams", "peer_paced", "workers"]

PAYLOAD = 16
PACE = 0.050  # seconds per item of the concurrent streams
HOLD = 600.0  # seconds between a held stream's two items: it stays open until the figure cancels it
SLACK = 30.0


async def concurrent(bench: Bench) -> Figure:
    """(d) N streams at once, paced at 50 ms: all complete, none errored, p99 inter-item gap under 2x the pace;
    server CPU per item at most 1.1x the bare server's, and every stream open within 1.2x its time (SPEC 7).

    The bare server's handler that sends initial metadata first (as the project's protocol requires) runs too,
    in the details: the share of the per-call gap that the protocol's initial metadata costs in grpc.aio.
    """
    s = bench.sizes
    n, k = s.concurrent_streams, s.concurrent_items
    result: dict[str, dict[str, Any]] = {}
    for kind, variant in (("bare", ""), ("project", ""), ("bare_with_metadata", "metadata")):
        server_kind = "project" if kind == "project" else "bare"
        async with bench.clients(server_kind, s.channels) as clients:
            server, client_cpu = bench.servers[server_kind], time.process_time()
            server_cpu: float = server.cpu_seconds()
            result[kind] = run = await paced_streams(clients, n, k, variant=variant)
            # Which side was busy: a share near 1.0 means that CPU, not the servers' design, set the gaps.
            server_cpu = server.cpu_seconds() - server_cpu
            run["server_cpu_share"] = server_cpu / run["wall_s"]
            run["client_cpu_share"] = (time.process_time() - client_cpu) / run["wall_s"]
            # Server CPU per item, call set-up included: what each paced item costs with many streams open.
            run["server_cpu_us_per_item"] = server_cpu / (n * k) * 1e6
    if bench.peer is not None:
        result["peer"] = await peer_paced(bench, n, k, PACE)
    return Figure(
        "concurrent",
        f"{n} concurrent streams paced at {PACE * 1000:.0f} ms",
        metrics=_concurrent_metrics(n, result),
        details={**peer_details(bench), "streams": n, "items_per_stream": k, "connections": s.channels, **result},
    )


def _concurrent_metrics(n: int, result: dict[str, dict[str, Any]]) -> list[Metric]:
    """Figure (d)'s metrics, each with SPEC section 7's target."""
    bare, project, peer = result["bare"], result["project"], result.get("peer", {})

    def measured(name: str, unit: str, key: str, target: Target) -> Metric:
        """The metric whose three values are each run's ``key``."""
        return Metric(name, unit, project[key], bare[key], target, peer=peer.get(key))

    return [
        measured("completed", "streams", "completed", Target("value", "==", n, f"all {n}")),
        Metric(
            "errors",
            "streams",
            sum(project["errors"].values()),
            sum(bare["errors"].values()),
            Target("value", "==", 0, "none"),
            peer=sum(peer["errors"].values()) if peer else None,
        ),
        measured("p99 gap", "ms", "p99_gap_ms", Target("value", "<", 2 * PACE * 1000, f"< {2 * PACE * 1000:.0f} ms")),
        measured("server CPU per item", "us", "server_cpu_us_per_item", Target("ratio", "<=", 1.1, "<= 1.1x")),
        measured("all streams open", "s", "all_open_s", Target("ratio", "<=", 1.2, "<= 1.2x")),
    ]


async def peer_paced(bench: Bench, n: int, k: int, pace: float) -> dict[str, Any]:
    """``n`` paced streams of ``k`` items on the peer, from its own client process, with both sides' CPU shares."""
    assert bench.peer is not None
    cpu = bench.peer.server.cpu_seconds()
    run: dict[str, Any] = await bench.peer.agent.call(
        "paced", timeout=2 * SLACK + k * pace + n / 50, streams=n, items=k, pace=pace
    )
    cpu = bench.peer.server.cpu_seconds() - cpu
    run["server_cpu_share"] = cpu / run["wall_s"]
    run["server_cpu_us_per_item"] = cpu / (n * k) * 1e6
    return run


async def paced_streams(
    clients: list[Client], n: int, k: int, pace: float = PACE, *, variant: str = ""
) -> dict[str, Any]:
    """Run ``n`` streams of ``k`` items ``pace`` apart at once over ``clients``; what completed, failed, the gaps."""
    gaps: list[float] = []
    firsts: list[float] = []
    errors: Counter[str] = Counter()
    said: dict[str, str] = {}  # the first message of each status: what an error was, not only how many
    completed = 0

    async def one(client: Client) -> None:
        nonlocal completed
        try:
            items, last, arrivals = await read_all(
                client.count(k, PAYLOAD, pace, timeout=SLACK + k * pace, variant=variant), client, time.perf_counter
            )
        except grpc.aio.AioRpcError as error:
            errors[error.code().name] += 1
            said.setdefault(error.code().name, (error.details() or "")[:128])
            return
        gaps.extend((b - a) * 1000 for a, b in itertools.pairwise(arrivals))
        if arrivals:
            firsts.append(arrivals[0] - start)
        if items == k and client.completed(last):
            completed += 1

    start = time.perf_counter()
    await asyncio.gather(*(one(clients[i % len(clients)]) for i in range(n)))
    return {
        "completed": completed,
        "errors": dict(errors),
        "error_messages": said,
        "p50_gap_ms": percentile(gaps, 50) if gaps else None,
        "p99_gap_ms": percentile(gaps, 99) if gaps else None,
        "max_gap_ms": max(gaps) if gaps else None,
        "wall_s": time.perf_counter() - start,
        # Until every stream had its first item: opening N calls at once is a burst of per-call work that
        # delays the items of the streams already open.
        "all_open_s": max(firsts) if firsts else None,
    }


async def _hold(clients: list[Client], n: int) -> list[Call]:
    """Open ``n`` streams that stay open (one item, then a long pause); return once each delivered its item."""
    calls = [clients[i % len(clients)].count(2, PAYLOAD, HOLD, timeout=HOLD) for i in range(n)]
    try:
        await asyncio.wait_for(asyncio.gather(*(call.read() for call in calls)), SLACK + n / 100)
    except BaseException:
        _cancel(calls)
        raise
    return calls


def _cancel(calls: list[Call]) -> None:
    for call in calls:
        call.cancel()


async def _settle(server: ServerProcess, seconds: float) -> int:
    await asyncio.sleep(seconds)
    return server.rss()


async def _held_rss(server: ServerProcess, clients: list[Client], n: int) -> int:
    """The server's RSS while ``n`` streams are held open; they are cancelled on return."""
    calls = await _hold(clients, n)
    try:
        return await _settle(server, 0.3)
    finally:
        _cancel(calls)


async def memory(bench: Bench) -> Figure:
    """(f) Server memory per open stream: RSS growth over N streams held open, on a fresh server of each kind.

    A second round of N streams, after the first was cancelled, tells a leak from the allocator keeping freed
    memory: freed memory is reused (no growth), leaked memory is not (the second round grows as the first did).
    """
    s = bench.sizes
    n = s.memory_streams
    result: dict[str, dict[str, float]] = {}
    for kind in ("bare", "project"):
        with bench.fresh(kind) as server:
            async with bench.clients(kind, s.channels, server.address) as clients:
                # Warm-up: the first streams pay for imports, caches and arenas that later ones reuse.
                _cancel(await _hold(clients, min(n, 50)))
                baseline = await _settle(server, 0.5)
                first = await _held_rss(server, clients, n)
                after = await _settle(server, 1.0)
                second = await _held_rss(server, clients, n)
                final = await _settle(server, 1.0)
        result[kind] = {
            "baseline_rss": baseline,
            "held_rss": first,
            "after_cancel_rss": after,
            "held_again_rss": second,
            "after_second_cancel_rss": final,
            "bytes_per_stream": (first - baseline) / n,
            "second_round_growth_per_stream": (second - first) / n,
        }
    bare, project = result["bare"], result["project"]
    return Figure(
        "memory",
        f"server memory per open stream ({n} streams held open)",
        metrics=[
            Metric("per open stream", "KiB", project["bytes_per_stream"] / 1024, bare["bytes_per_stream"] / 1024),
            Metric(
                "growth, 2nd round",
                "KiB/stream",
                project["second_round_growth_per_stream"] / 1024,
                bare["second_round_growth_per_stream"] / 1024,
            ),
        ],
        details={"streams": n, "connections": s.channels, **result},
    )


def _listeners(server: ServerProcess, port: int) -> int:
    """How many processes of the server's tree listen on ``port``."""
    count = 0
    for proc in server.tree():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp")):
                count += 1
    return count


async def _load(bench: Bench, address: str, seconds: float) -> float:
    """Items/s that many clients (one connection each) get from sequential 100-item generations."""
    items = 0
    deadline = time.perf_counter() + seconds

    async def client_loop(client: Client) -> None:
        nonlocal items
        while time.perf_counter() < deadline:
            got, _, _ = await read_all(client.count(100, PAYLOAD, timeout=SLACK), client)
            items += got

    start = time.perf_counter()
    async with bench.clients("project", max(2, bench.sizes.channels), address) as clients:
        await asyncio.gather(*(client_loop(c) for c in clients))
    return items / (time.perf_counter() - start)


async def workers(bench: Bench) -> Figure:
    """(g) ``--workers 2`` against ``--workers 1`` under many clients; skipped while the option does not work."""
    title = "1 vs 2 workers under many clients"
    rates: dict[int, float] = {}
    for count in (2, 1):
        try:
            # Unpinned: two workers need both CPUs (the client shares one of them).
            with bench.fresh("project", ["--workers", str(count)], pinned=False) as server:
                port = int(server.address.rsplit(":", 1)[1])
                serving = _listeners(server, port)
                if count == 2 and serving < 2:
                    processes = len(server.tree())
                    return Figure(
                        "workers",
                        title,
                        status="skipped",
                        reason=f"--workers 2 is accepted but {serving} process(es) listen on the port "
                        f"({processes} in the server's process tree): the option is not implemented yet",
                    )
                rates[count] = await _load(bench, server.address, bench.sizes.workers_seconds)
        except ServerFailed as error:
            return Figure("workers", title, status="skipped", reason=f"engine-server --workers {count}: {error}")
    return Figure(
        "workers",
        title,
        metrics=[Metric("items/s", "items/s", rates[2], rates[1])],
        baseline_label="1 worker",
        details={"rates": rates, "clients": max(2, bench.sizes.channels), "seconds": bench.sizes.workers_seconds},
    )
