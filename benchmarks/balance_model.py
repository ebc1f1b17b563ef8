"""``python -m benchmarks.balance_model``: the balance figure's workload against idealized balancers, no servers.

:mod:`benchmarks.fleet_balance` measures max/min in flight across 3 replicas for real clients. How low can that
number go at all on the same workload? A balancer places only the *start* of each stream, while streams end at
random, and with few streams per replica a difference of two is already a large ratio (9/7 = 1.29). This model
replays the same arrivals (one every ``1 / rate`` seconds, ``random`` or ``periodic`` lengths, the same seed) and
samples the same way (every 0.1 s after a 3 s warm-up, mean of max/min over the samples where every replica has
one), for:

- ``round_robin``: replica 0, 1, 2, 0, ...;
- ``least_loaded``: each start to the replica with the fewest in flight *now* (ties: the lowest index), a
  balancer that knows every count at every moment, which no real one does;
- ``least_loaded_0.1s``: the same, from counts up to 0.1 s old (reports every 0.1 s, as ``EngineClient``'s
  weighted round-robin gets them): the best a balancer reading 0.1 s reports could do.

It is arithmetic on the workload, deterministic for a seed, and runs in a second.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
from dataclasses import asdict, dataclass

__all__ = ["POLICIES", "ModelRun", "simulate"]

POLICIES = ("round_robin", "least_loaded", "least_loaded_0.1s")
REPLICAS = 3
WARMUP = 3.0
SAMPLE = 0.1
REPORT = 0.1


@dataclass(frozen=True)
class ModelRun:
    """One modelled run: the same summary as a :class:`benchmarks.fleet_balance.Balance`."""

    policy: str
    pattern: str
    rate: float
    mean_max_over_min: float
    mean_inflight_per_replica: list[float]


def simulate(
    policy: str,
    pattern: str,
    rate: float,
    *,
    seconds: float = 20.0,
    short_s: float = 0.2,
    long_s: float = 5.0,
    long_share: float = 0.2,
    seed: int = 7,
) -> ModelRun:
    """Replay ``seconds`` of arrivals at ``rate`` a second under ``policy``; see the module's text."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}: one of {', '.join(POLICIES)}")
    rng = random.Random(seed)
    inflight = [0] * REPLICAS
    reported = [0] * REPLICAS
    ends: list[tuple[float, int]] = []
    samples: list[list[int]] = []
    next_sample, next_report = WARMUP, 0.0
    n, now = 0, 0.0
    while now < seconds:
        while ends and ends[0][0] <= now:
            inflight[heapq.heappop(ends)[1]] -= 1
        while next_sample <= now:
            samples.append(list(inflight))
            next_sample += SAMPLE
        while next_report <= now:
            reported = list(inflight)
            next_report += REPORT
        long = n % 3 == 2 if pattern == "periodic" else rng.random() < long_share
        if policy == "round_robin":
            replica = n % REPLICAS
        else:
            counts = inflight if policy == "least_loaded" else reported
            replica = counts.index(min(counts))
            reported[replica] += 1  # a balancer remembers its own picks until the next report
        inflight[replica] += 1
        heapq.heappush(ends, (now + (long_s if long else short_s), replica))
        n += 1
        now = n / rate
    full = [max(sample) / min(sample) for sample in samples if min(sample) > 0]
    means = [statistics.fmean(column) for column in zip(*samples, strict=True)]
    return ModelRun(
        policy,
        pattern,
        rate,
        round(statistics.fmean(full), 3) if full else float("inf"),
        [round(mean, 2) for mean in means],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.balance_model", description=__doc__)
    parser.add_argument("--rates", default="20,60", help="streams started per second, comma-separated")
    parser.add_argument("--seeds", type=int, default=5, help="seeds averaged over (pattern random)")
    args = parser.parse_args(argv)
    for rate in (float(part) for part in args.rates.split(",")):
        for pattern in ("random", "periodic"):
            for policy in POLICIES:
                runs = [simulate(policy, pattern, rate, seed=seed) for seed in range(7, 7 + args.seeds)]
                mean = round(statistics.fmean(run.mean_max_over_min for run in runs), 3)
                print(json.dumps({**asdict(runs[0]), "mean_max_over_min": mean, "seeds": args.seeds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
