"""Figure (n), a fleet (SPEC sections 7 and 9): balance across replicas, and streams through a failing replica.

The fleet harnesses run as they do on their own, each a subprocess on every CPU (the replicas of a fleet share
the machine; pinning them with the shared servers would measure the pinning):

- ``python -m benchmarks.fleet_balance``: 3 replicas, skewed stream lengths at 60 streams a second; max/min of the
  generations in flight across the replicas with weighted round-robin over the ORCA reports (EngineClient's
  config; target at most 1.3) against plain round-robin (the baseline column), for random and periodic lengths;
  and a scale-out: the new replica's share of the calls in its second connection age (a fair share is 1/3);
- ``python -m benchmarks.migration``: 3 replicas, one SIGKILLed, one drained, one frozen mid-stream: resumable
  streams lost, items duplicated or missing (target: 0 each), and streams that are not resumable that looked
  complete while missing items (target: 0).

Their own JSON files are kept in the figure's details, whole.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .harness import Bench
from .procs import pinned
from .report import Figure, Metric, Target

__all__ = ["fleet"]

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 600.0
AT_MOST = Target("value", "<=", 1.3, "<= 1.3")
NONE = Target("value", "==", 0, "none")


async def _harness(module: str, args: tuple[str, ...], pattern: str) -> dict[str, Any]:
    """Run ``python -m module args --out DIR`` on every CPU; its JSON result."""
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as out:
        every_cpu = list(range(os.cpu_count() or 1))
        command = pinned([sys.executable, "-m", module, *args, "--out", out], every_cpu)
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        result = _written(Path(out), pattern)
        if proc.returncode != 0 or result is None:
            raise RuntimeError(f"{module} exited {proc.returncode}: {stderr.decode(errors='replace')[-600:]}")
        return result


def _written(out: Path, pattern: str) -> dict[str, Any] | None:
    """The JSON file a harness wrote into ``out`` (a few KB, read at once), or None."""
    written = sorted(out.glob(pattern))
    return json.loads(written[-1].read_text()) if written else None


def _balance(runs: list[dict[str, Any]], pattern: str) -> Metric:
    rate = max(r["rate"] for r in runs)
    by_policy = {r["policy"]: r for r in runs if r["pattern"] == pattern and r["rate"] == rate}
    return Metric(
        f"max/min in flight, {pattern} lengths, {rate:g}/s",
        "",
        by_policy["weighted_round_robin"]["mean_max_over_min"],
        by_policy["round_robin"]["mean_max_over_min"],
        target=AT_MOST,
    )


def _faults(results: list[dict[str, Any]]) -> list[Metric]:
    metrics = []
    for r in results:
        fault = r["fault"]
        missing = r["items_duplicated"] + r["items_missing"]
        metrics += [
            Metric(f"{fault}: resumable streams lost", "streams", r["lost"], target=NONE),
            Metric(f"{fault}: items duplicated or missing", "items", missing, target=NONE),
        ]
        if r["migration_ms_p99"] is not None:  # None: no resumable stream was on the failed replica
            metrics.append(Metric(f"{fault}: migration p99", "ms", r["migration_ms_p99"]))
    looked_complete = sum(r["looked_complete_while_missing_items"] for r in results)
    metrics.append(Metric("streams that looked complete while missing items", "streams", looked_complete, target=NONE))
    return metrics


async def fleet(bench: Bench) -> Figure:
    """(n) Balance with load reports (at most 1.3), and 0 resumable streams lost when a replica fails."""
    s = bench.sizes
    balance = await _harness("benchmarks.fleet_balance", s.fleet_balance_args, "fleet-*.json")
    migration = await _harness("benchmarks.migration", s.migration_args, "migration-*.json")
    scale = balance["scale_out"]
    second_age = scale["calls_in_the_second_age"] / max(1, scale["calls_total_in_the_second_age"])
    return Figure(
        "fleet",
        "a fleet of 3 replicas: balance, scale-out, and streams through a failing replica",
        metrics=[
            _balance(balance["balance"], "random"),
            _balance(balance["balance"], "periodic"),
            Metric("scale-out: new replica's share, second connection age", "", round(second_age, 3)),
            *_faults(migration["results"]),
        ],
        baseline_label="plain round-robin (balance rows)",
        details={"fleet_balance": balance, "migration": migration},
    )
