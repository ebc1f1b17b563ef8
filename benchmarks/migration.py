"""``python -m benchmarks.migration``: streams across a fleet of 3 real replicas while one of them fails.

For each fault (SIGKILL, a drain, SIGSTOP), a fresh fleet (:mod:`.fleet`) serves ``placed`` (resumable) and
``placed_once`` (the same stream, not resumable), whose items carry the id of the process serving them. Streams
of both (about half each) run through one ``EngineClient`` with its default options; once every stream has some
items, one replica gets the fault. Reported per fault:

- resumable streams: how many were on the failed replica and moved, how many were lost (ended without
  COMPLETED), items duplicated and items missing (target: all 0), and the migration time, from the fault to the
  next item from another replica (p50, p99);
- streams that are not resumable, on the failed replica: how each ended (Unavailable, or STOPPED by the drain),
  and how many looked complete while missing items (target: 0).

Results go to ``benchmarks/results/migration-*.json``; the machine's load average is recorded with them. The
client's keepalive defaults decide how fast a frozen replica is found (docs/client.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse
from engine_runtime.server import EngineError, FinishReason

from .fleet import Fleet, fleet
from .report import machine_info, percentile, write_json

__all__ = ["FAULTS", "main", "measure"]

FAULTS = ("kill", "drain", "freeze")
# A drain hands resumable streams off at once and gives the others one second to stop.
SERVER_ARGS = ["--drain-timeout", "0", "--stop-timeout", "1", "--kill-timeout", "1"]
OUT = Path(__file__).resolve().parent / "results"


@dataclass
class Stream:
    """What one stream delivered: indexes, the process that served each, when each arrived, and how it ended."""

    resumable: bool
    indexes: list[int] = field(default_factory=list)
    pids: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    finish: FinishReason | None = None
    error: str = ""


Engine = Any  # Engine[CountRequest, CountResponse]


async def _consume(engine: Engine, stream: Stream, request: CountRequest, ready: asyncio.Event, at: int) -> None:
    generation = await engine.generate(request)
    try:
        async for item in generation:
            stream.indexes.append(item.index)
            stream.pids.append(item.payload)
            stream.times.append(time.monotonic())
            if len(stream.indexes) == at:
                ready.set()
    except EngineError as error:
        stream.error = f"{error.code.name}: {error.message}"
        ready.set()
    stream.finish = generation.finish_reason


def _inject(f: Fleet, fault: str, victim: str) -> None:
    [index] = [r.index for r in f.replicas if str(r.proc.pid) == victim]
    {"kill": f.kill, "drain": f.drain, "freeze": f.freeze}[fault](index)


def _victim(runs: list[Stream]) -> str:
    """The replica (its process id) serving the most streams of both kinds: the balancer's first picks, made
    while replicas are still connecting, do not always alternate."""
    counts: dict[str, list[int]] = {}
    for s in runs:
        if s.pids:
            counts.setdefault(s.pids[0], [0, 0])[s.resumable] += 1
    return max(counts, key=lambda pid: (min(counts[pid]), sum(counts[pid])))


async def _run(f: Fleet, fault: str, streams: int, items: int, pace: float) -> dict[str, Any]:
    # The kinds in pairs (R, R, N, N, ...): a picker that cycles over 1, 2 or 3 replicas then gives each of them
    # streams of both. Strict alternation did not: while one replica was still connecting, the balancer cycled
    # over two and sent every resumable stream to one and every other stream to the other.
    runs = [Stream(resumable=i % 4 < 2) for i in range(streams)]
    request = CountRequest(count=items, delay_s=pace)
    async with EngineClient([f.target]) as client:  # one channel over the fleet, as a fleet target gets
        engines = {}
        for name in ("placed", "placed_once"):
            engines[name] = (await client.get(name)).downcast(CountRequest, CountResponse)
        readiness = [asyncio.Event() for _ in runs]
        tasks = [
            asyncio.create_task(_consume(engines["placed" if s.resumable else "placed_once"], s, request, r, 5))
            for s, r in zip(runs, readiness, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readiness)), 60)
        victim = _victim(runs)
        started = time.monotonic()
        await asyncio.to_thread(_inject, f, fault, victim)
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
        migrations = client.migrations
    return _summary(fault, runs, victim, started, items, migrations)


def _summary(
    fault: str, runs: list[Stream], victim: str, fault_at: float, items: int, migrations: int
) -> dict[str, Any]:
    hit = [s for s in runs if s.pids and s.pids[0] == victim]  # every stream had items before the fault
    moved = [s for s in hit if s.resumable]
    times = []
    for s in moved:
        after = [t for t, pid in zip(s.times, s.pids, strict=True) if t >= fault_at and pid != victim]
        if after:
            times.append(after[0] - fault_at)
    resumable = [s for s in runs if s.resumable]
    lost = [s for s in resumable if s.finish is not FinishReason.COMPLETED]
    duplicated = sum(len(s.indexes) - len(set(s.indexes)) for s in resumable)
    missing = sum(len(set(range(items)) - set(s.indexes)) for s in resumable)
    others = [s for s in hit if not s.resumable]
    looked_complete = [s for s in runs if s.finish is FinishReason.COMPLETED and s.indexes != list(range(items))]
    return {
        "fault": fault,
        "resumable_streams": len(resumable),
        "resumable_on_failed_replica": len(moved),
        "migrations": migrations,
        "lost": len(lost),
        "items_duplicated": duplicated,
        "items_missing": missing,
        "migration_ms_p50": round(percentile(times, 50) * 1000, 1) if times else None,
        "migration_ms_p99": round(percentile(times, 99) * 1000, 1) if times else None,
        "not_resumable_on_failed_replica": len(others),
        "not_resumable_unavailable": sum(s.error.startswith("UNAVAILABLE") for s in others),
        "not_resumable_stopped": sum(s.finish is FinishReason.STOPPED for s in others),
        "looked_complete_while_missing_items": len(looked_complete),
        # How each lost resumable stream ended: its error (or finish reason), items received, where it ran.
        "lost_detail": [
            {
                "error": s.error,
                "finish": s.finish.name if s.finish else None,
                "items": len(s.indexes),
                "on": s.pids[-1:],
            }
            for s in lost
        ],
    }


def measure(fault: str, streams: int, items: int, pace: float) -> dict[str, Any]:
    """One fault on a fresh fleet of three: the summary above."""
    with fleet(3, targets=["benchmarks.engines:registry"], args=SERVER_ARGS) as f:
        return asyncio.run(_run(f, fault, streams, items, pace))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.migration", description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=30, help="concurrent streams per fault (2/3 resumable)")
    parser.add_argument("--items", type=int, default=300, help="items per stream")
    parser.add_argument("--pace", type=float, default=0.01, help="seconds between items")
    parser.add_argument("--fault", action="append", choices=FAULTS, help="only this fault (repeatable)")
    parser.add_argument("--out", type=Path, default=OUT, help="directory for the JSON result")
    args = parser.parse_args(argv)
    load_before = machine_info()["load_average"]
    results = [measure(fault, args.streams, args.items, args.pace) for fault in args.fault or FAULTS]
    machine = {**machine_info(), "load_average_before": load_before}
    run = {
        "figure": "migration",
        "machine": machine,
        "parameters": {"streams": args.streams, "items": args.items, "pace_s": args.pace, "server": SERVER_ARGS},
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"migration-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(path, run)
    for row in results:
        print(" ".join(f"{key}={value}" for key, value in row.items()))
    print(f"load average {load_before} -> {machine['load_average']}; written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
