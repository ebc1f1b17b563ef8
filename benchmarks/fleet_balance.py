"""``python -m benchmarks.fleet_balance``: how evenly a fleet carries skewed streams, and how fast a scale-out helps.

Two figures, on real replicas from :mod:`benchmarks.fleet` (loopback hosts 127.0.0.2, ...):

- **balance**: 3 replicas, one :class:`EngineClient` opening streams at a steady rate (each of ``--rates``), some
  short and some long.
  Every ``--sample`` seconds after a warm-up the generations in flight on each replica are counted (from each
  stream's ``x-served-by``); the figure is max/min across the replicas, averaged over the samples, for weighted
  round-robin over the ORCA reports (EngineClient's own config) against plain round-robin. Two patterns of
  lengths: ``random`` (each stream long with probability ``--long-share``) and ``periodic`` (every third stream
  long: round-robin then sends every long stream to the same replica).
- **scale-out**: 2 replicas behind a DNS name (:mod:`benchmarks.fleet_dns`) with ``--max-connection-age``,
  short calls at a steady rate, one replica added: when it gets its first call, and how many calls it gets
  within one connection age of being added, and in the age after that.

Loads are bounded in count and time and stay on loopback. The machine's load average is recorded beside the
figures, since other work on a small machine moves them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine_runtime.client import EngineClient
from engine_runtime.client.remote import RemoteStream
from engine_runtime.client.routing import SINGLE_SERVICE_CONFIG
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse

from .fleet import fleet
from .fleet_dns import RESOLVE_OFTEN, FleetDNS

RESULTS = Path(__file__).resolve().parent / "results"
SERVER_ARGS = ["--drain-timeout", "1", "--stop-timeout", "1", "--kill-timeout", "0.5"]
ROUND_ROBIN = [("grpc.service_config", SINGLE_SERVICE_CONFIG)]


@dataclass
class Balance:
    """One balance run: max/min of generations in flight across the replicas, over the samples."""

    policy: str
    pattern: str
    rate: float
    streams: int
    samples: int
    mean_max_over_min: float  # samples where every replica had at least one in flight
    p90_max_over_min: float
    samples_with_an_idle_replica: float  # share of samples where some replica had none
    mean_inflight_per_replica: list[float]
    max_over_min_of_means: float  # of the time-averaged in flight per replica


async def balance(target: str, policy: str, pattern: str, rate: float, args: argparse.Namespace) -> Balance:
    """Open streams at ``rate`` a second for ``args.seconds``; count each replica's in flight every ``args.sample``."""
    rng = random.Random(args.seed)
    options = ROUND_ROBIN if policy == "round_robin" else []
    inflight: Counter[str] = Counter()
    samples: list[list[int]] = []
    async with EngineClient(target, options=options) as client:
        count = (await client.get("count")).downcast(CountRequest, CountResponse)
        assert count is not None
        replicas = sorted(await client.transport.replica_addresses())

        async def one(long: bool) -> None:
            items, delay = (int(args.long_s / 0.1), 0.1) if long else (int(args.short_s / 0.05), 0.05)
            stream = await count.generate(CountRequest(count=items, delay_s=delay))
            assert isinstance(stream, RemoteStream)
            replica = await stream.served_by()
            inflight[replica] += 1
            try:
                async for _ in stream:
                    pass
            finally:
                inflight[replica] -= 1

        async def sample() -> None:
            await asyncio.sleep(args.warmup)
            while True:
                samples.append([inflight[r] for r in replicas])
                await asyncio.sleep(args.sample)

        sampler = asyncio.create_task(sample())
        tasks = []
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < args.seconds:
            long = n % 3 == 2 if pattern == "periodic" else rng.random() < args.long_share
            tasks.append(asyncio.create_task(one(long)))
            n += 1
            await asyncio.sleep(1 / rate)
        sampler.cancel()
        await asyncio.gather(*tasks)
    full = [max(s) / min(s) for s in samples if min(s) > 0]
    means = [statistics.fmean(column) for column in zip(*samples, strict=True)]
    return Balance(
        policy=policy,
        pattern=pattern,
        rate=rate,
        streams=n,
        samples=len(samples),
        mean_max_over_min=round(statistics.fmean(full), 3) if full else float("inf"),
        p90_max_over_min=round(statistics.quantiles(full, n=10)[-1], 3) if len(full) > 1 else float("inf"),
        samples_with_an_idle_replica=round(1 - len(full) / max(1, len(samples)), 3),
        mean_inflight_per_replica=[round(m, 2) for m in means],
        max_over_min_of_means=round(max(means) / min(means), 3) if min(means) > 0 else float("inf"),
    )


@dataclass
class ScaleOut:
    """One scale-out run: the new replica's first call, its calls within one connection age and in the next one."""

    connection_age_s: float
    rate: float
    first_call_after_s: float | None
    calls_within_one_age: int
    calls_total_within_one_age: int
    calls_in_the_second_age: int
    calls_total_in_the_second_age: int


async def scale_out(args: argparse.Namespace) -> ScaleOut:
    age = args.connection_age
    server_args = [*SERVER_ARGS, "--max-connection-age", str(age)]
    with fleet(2, args=server_args, same_port=True) as f, FleetDNS(lambda: f.live_hosts) as dns:
        async with EngineClient(dns.target(f.port), options=RESOLVE_OFTEN) as client:
            echo = (await client.get("echo")).downcast(EchoRequest, EchoResponse)
            assert echo is not None
            added = await asyncio.to_thread(f.add)
            since = time.monotonic()
            served: list[tuple[float, str]] = []
            while time.monotonic() - since < 2 * age:
                stream = await echo.generate(EchoRequest(text="x"))
                assert isinstance(stream, RemoteStream)
                served.append((time.monotonic() - since, await stream.served_by()))
                async for _ in stream:
                    pass
                await asyncio.sleep(1 / args.rate)
    new = [at for at, replica in served if replica == added.address]
    first, second = [at for at, _ in served if at < age], [at for at, _ in served if at >= age]
    return ScaleOut(
        age,
        args.rate,
        round(new[0], 3) if new else None,
        sum(at < age for at in new),
        len(first),
        sum(at >= age for at in new),
        len(second),
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"load_average_before": os.getloadavg(), "settings": vars(args).copy()}
    runs = []
    with fleet(3, args=SERVER_ARGS) as f:
        for rate in args.rates:
            for pattern in ("random", "periodic"):
                for policy in ("round_robin", "weighted_round_robin"):
                    runs.append(asdict(await balance(f.target, policy, pattern, rate, args)))
                    print(json.dumps(runs[-1]), flush=True)
    results["balance"] = runs
    results["scale_out"] = asdict(await scale_out(args))
    print(json.dumps(results["scale_out"]), flush=True)
    results["load_average_after"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet_balance", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20, help="length of each balance run")
    parser.add_argument(
        "--rates",
        type=lambda text: [float(part) for part in text.split(",")],
        default=[20.0, 60.0],
        help="streams started per second in the balance runs, comma-separated (about 8 and 22 in flight per replica)",
    )
    parser.add_argument("--rate", type=float, default=20, help="calls started per second in the scale-out run")
    parser.add_argument("--short-s", type=float, default=0.2, help="length of a short stream")
    parser.add_argument("--long-s", type=float, default=5.0, help="length of a long stream")
    parser.add_argument("--long-share", type=float, default=0.2, help="share of long streams (pattern random)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before sampling starts")
    parser.add_argument("--sample", type=float, default=0.1, help="seconds between samples")
    parser.add_argument("--connection-age", type=float, default=3.0, help="--max-connection-age of the scale-out")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / time.strftime("fleet-%Y%m%d-%H%M%S.json", time.gmtime())
    results["settings"]["out"] = str(results["settings"]["out"])
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
