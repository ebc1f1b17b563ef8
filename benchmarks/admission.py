"""Figure (h), the admission queue: a burst at an engine with ``max_concurrency=4`` and a queue of 256, and the
time from a queued call's cancel to its removal from the queue, as the server records it.

It runs against :mod:`benchmarks.queue_server` (the project's server with a limited engine), started for the
figure; the bare server has no queue, so there is no baseline: the targets apply to the values.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections import Counter
from typing import Any, cast

import grpc
from google.protobuf.empty_pb2 import Empty
from google.protobuf.struct_pb2 import Struct

from engine_runtime.generated.engine.v1 import engine_pb2_grpc
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest

from .clients import channel, generate_request
from .harness import Bench
from .procs import running
from .queue_server import MAX_CONCURRENCY
from .report import Figure, Metric, Target, percentile

__all__ = ["admission"]

MAX_QUEUE = 256
BURST_ITEMS = 3
BURST_PACE = 0.002  # seconds between a burst call's items: each call holds its slot for a few milliseconds
SLACK = 60.0


async def _burst(stub: engine_pb2_grpc.EngineServiceAsyncStub, calls: int) -> dict[str, Any]:
    """``calls`` calls at once; how each ended, and each call's time to its first item (its wait included)."""
    ends: Counter[str] = Counter()
    firsts: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        call = stub.Generate(
            generate_request("burst", CountRequest(count=BURST_ITEMS, delay_s=BURST_PACE)), timeout=SLACK
        )
        items, last = 0, None
        try:
            async for message in call:
                if not items and message.items:
                    firsts.append(time.perf_counter() - started)
                items += len(message.items)
                last = message
        except grpc.aio.AioRpcError as error:
            ends[error.code().name] += 1
            return
        complete = items == BURST_ITEMS and last is not None and last.finish_reason
        ends["completed" if complete else "truncated"] += 1

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    wall = time.perf_counter() - started
    return {"ends": dict(ends), "wall_s": wall, "first_item_ms": sorted(f * 1000 for f in firsts)}


async def _cancels(stub: engine_pb2_grpc.EngineServiceAsyncStub, probes: int) -> tuple[list[float], int]:
    """Hold every slot, then queue and cancel ``probes`` calls one by one; cancel-to-removal in ms, and misses."""
    holders = [
        stub.Generate(generate_request("burst", CountRequest(count=1_000_000, delay_s=0.05)), timeout=SLACK)
        for _ in range(MAX_CONCURRENCY)
    ]
    for holder in holders:
        await holder.read()  # it runs: the four slots are taken
    cancelled_at: dict[str, float] = {}
    for i in range(probes):
        request_id = f"queued-{i}-{uuid.uuid4().hex[:8]}"
        call = stub.Generate(generate_request("burst", CountRequest(count=1), request_id), timeout=SLACK)
        await call.initial_metadata()  # sent at once: it waits in the queue now
        cancelled_at[request_id] = time.time()
        call.cancel()
        await asyncio.sleep(0.005)  # let the removal land before the next probe
    await asyncio.sleep(0.2)
    for holder in holders:
        holder.cancel()
    removed: dict[str, float] = {}
    async for message in stub.Generate(generate_request("queue_exits", Empty()), timeout=10):
        for item in message.items:
            result = Struct()
            item.Unpack(result)
            removed.update({str(k): float(cast(float, v)) for k, v in result.items()})
    latencies = [(removed[r] - t) * 1000 for r, t in cancelled_at.items() if r in removed]
    return latencies, sum(1 for r in cancelled_at if r not in removed)


async def admission(bench: Bench) -> Figure:
    """(l) A burst of N calls at ``max_concurrency=4`` with a queue of 256; queued cancel to removal, p99 < 2 ms."""
    s = bench.sizes
    command = [sys.executable, "-m", "benchmarks.queue_server", "--port", "0", "--loop", bench.loop]
    command += ["--max-queue", str(MAX_QUEUE)]
    cpus = bench.pinning.server_cpus if bench.pinning.applied else []
    with running("queue server", command, cpus) as server:
        async with contextlib.AsyncExitStack() as stack:
            ch = await stack.enter_async_context(channel(server.address))
            stub: engine_pb2_grpc.EngineServiceAsyncStub = engine_pb2_grpc.EngineServiceStub(ch)
            burst = await _burst(stub, s.admission_burst)
            latencies, missing = await _cancels(stub, s.admission_cancels)
    if not latencies:
        raise RuntimeError("no queued call's removal was recorded")
    ends = burst["ends"]
    firsts = burst["first_item_ms"]
    return Figure(
        "admission",
        f"admission: {s.admission_burst} calls at max_concurrency={MAX_CONCURRENCY}, queue {MAX_QUEUE}",
        metrics=[
            Metric(
                "completed", "calls", ends.get("completed", 0), target=Target("value", "==", s.admission_burst, "all")
            ),
            Metric("refused", "calls", ends.get("RESOURCE_EXHAUSTED", 0), target=Target("value", "==", 0, "none")),
            Metric("cancel to removal p50", "ms", percentile(latencies, 50)),
            Metric(
                "cancel to removal p99", "ms", percentile(latencies, 99), target=Target("value", "<", 2.0, "< 2 ms")
            ),
        ],
        baseline_label="none (the bare server has no queue)",
        details={
            "burst_calls": s.admission_burst,
            "burst_ends": ends,
            "burst_wall_s": burst["wall_s"],
            "burst_first_item_ms": {
                "p50": percentile(firsts, 50) if firsts else None,
                "p99": percentile(firsts, 99) if firsts else None,
            },
            "cancel_probes": s.admission_cancels,
            "removals_not_recorded": missing,
            "cancel_to_removal_max_ms": max(latencies),
        },
    )
