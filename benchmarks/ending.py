"""How a stream ends early: a client SIGKILLed mid-stream, and a graceful stop mid-stream.

- **disconnect**: a client process holds paced probes (one item per 5 ms) open and reading, and is SIGKILLed;
  each probe's engine records when it learnt of it; the latency is from the SIGKILL to that record. The client
  is ``python -m benchmarks.holder`` for the bare and project servers, the peer's own client for the peer. The
  same again with the client shutting down its connections itself just before the SIGKILL (:mod:`.drop`): from
  that moment, without the kernel's teardown of the killed process.
- **stop**: a paced stream is stopped gracefully after 3 items through each one's Python client (the project's
  ``EngineClient``: ``stream.context.stop_generating()``; the peer's: ``Context.stop_generating()``); the engine
  then yields ``DRAIN`` more items and returns. What reaches the client after the stop, and how the stream ends.
  The bare server has no graceful stop (gRPC has only cancellation), so it has no column here.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from dataclasses import replace
from typing import Any

from google.protobuf.empty_pb2 import Empty
from google.protobuf.json_format import MessageToDict

from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse
from engine_runtime.server import Context

from .harness import Bench, peer_details
from .peer_runtime import PeerFailed, drop_when_held, sigkill_when_held
from .report import Figure, Metric, Target, latency_metrics, percentile

__all__ = ["disconnect", "stop"]

PROBE_PACE = 0.005
STOP_PACE = 0.010
BEFORE = 3  # items read before the stop
DRAIN = 5  # items the engine yields once it sees the stop
SLACK = 30.0


async def _kill_holders(bench: Bench, kind: str, exits: list[float] | None) -> dict[str, float]:
    """End a holding client ``disconnect_rounds`` times; ``{request_id: time.time() it ended}``. With ``exits``
    each is SIGKILLed (its time from the kill to its exit goes in ``exits``, ms); else it drops its connections
    first, and the time is the drop's."""
    s = bench.sizes
    killed: dict[str, float] = {}
    for round_ in range(s.disconnect_rounds):
        prefix = f"disconnect-{kind}-{round_}-{uuid.uuid4().hex[:8]}"
        if kind == "peer":
            assert bench.peer is not None
            command, env = bench.peer.hold_command(s.disconnect_streams, prefix, PROBE_PACE), bench.peer.env
        else:
            address = bench.servers[kind].address
            command = [sys.executable, "-m", "benchmarks.holder", kind, address, str(s.disconnect_streams), prefix]
            command, env = [*command, str(PROBE_PACE)], {}
        try:
            if exits is None:
                at = await drop_when_held(command, env, bench.client_cpus)
            else:
                at, reaped = await sigkill_when_held(command, env, bench.client_cpus)
                exits.append((reaped - at) * 1000)
        except RuntimeError as error:
            if kind == "peer":
                raise PeerFailed(f"its holding client: {error}") from error
            raise
        killed.update({f"{prefix}-{i}": at for i in range(s.disconnect_streams)})
    return killed


async def _recorded(bench: Bench, kind: str) -> dict[str, float]:
    """When each probe's engine saw its end, as its server recorded it."""
    if kind == "peer":
        assert bench.peer is not None
        notes = await bench.peer.agent.call("notes")
        return {r: note["killed_at"] for r, note in notes.items() if "killed_at" in note}
    async with bench.clients(kind) as (client,):
        return await client.kill_times()


async def disconnect(bench: Bench) -> Figure:
    """Client SIGKILLed to engine noticing, p50/p99; target p99 under 2 ms (SPEC section 7)."""
    kinds = ["project", "bare", *(["peer"] if bench.peer is not None else [])]
    latencies: dict[str, list[float]] = {}
    dropped: dict[str, list[float]] = {}
    missing: dict[str, int] = {}
    exits: list[float] = []
    for kind in kinds:
        for found, how in ((latencies, exits), (dropped, None)):
            ended = await _kill_holders(bench, kind, how)
            await asyncio.sleep(0.3)  # the engines see a disconnect within milliseconds; the peer's at its next yield
            seen = await _recorded(bench, kind)
            found[kind] = [(seen[r] - at) * 1000 for r, at in ended.items() if r in seen]
            missing[kind] = missing.get(kind, 0) + sum(1 for r in ended if r not in seen)
    if not all(found["project"] and found["bare"] for found in (latencies, dropped)):
        raise RuntimeError(f"no engine recorded a disconnect (not recorded: {missing})")
    target = Target("value", "<", 2.0, "< 2 ms")
    drops = [replace(m, name=f"connection dropped: {m.name}") for m in latency_metrics(dropped, target)]
    return Figure(
        "disconnect",
        "client SIGKILLed mid-stream (or dropping its connections) to engine noticing",
        metrics=[*latency_metrics(latencies, target), *drops],
        details={
            **peer_details(bench),
            "clients_killed": bench.sizes.disconnect_rounds,
            "streams_per_client": bench.sizes.disconnect_streams,
            "probe_pace_ms": PROBE_PACE * 1000,
            "not_recorded": missing,
            "max_ms": {k: max(v) for k, v in latencies.items() if v},
            "connection_dropped_max_ms": {k: max(v) for k, v in dropped.items() if v},
            # From the SIGKILL to the client process reaped: the kernel's teardown, which every server waits for
            # alike (the connection closes during it) and which the latencies above include.
            "client_kill_to_reaped_p50_ms": percentile(exits, 50),
        },
    )


async def _project_stops(bench: Bench, streams: int) -> list[dict[str, Any]]:
    """Stop ``streams`` drain probes through ``EngineClient``; each one's counts, ending and engine's notes."""
    runs: list[dict[str, Any]] = []
    async with EngineClient(bench.servers["project"].address, timeout=SLACK) as client:
        engine = (await client.get("drain_probe")).downcast(CountRequest, CountResponse)
        assert engine is not None
        for _ in range(streams):
            stream = await engine.generate(CountRequest(count=100_000, size=DRAIN, delay_s=STOP_PACE), Context())
            received, stopped_at = 0, None
            async for _item in stream:
                received += 1
                if received == BEFORE:
                    stopped_at = time.time()
                    stream.context.stop_generating()
            ending = stream.finish_reason.name if stream.finish_reason is not None else "no finish reason"
            runs.append({"id": stream.context.id, "received": received, "stopped_at": stopped_at, "ending": ending})
        await asyncio.sleep(0.1)
        notes: dict[str, Any] = {}
        async for item in await (await client.get("stop_notes")).generate(Empty()):
            notes.update(MessageToDict(item))
    for run in runs:
        run.update(notes.get(run.pop("id"), {}))
    return runs


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Items after the stop (the engine's count) against those the client received, and how the streams ended."""
    yielded = sum(int(r.get("yielded", 0)) - BEFORE for r in runs)
    delivered = sum(r["received"] - BEFORE for r in runs)
    noticed = [(r["stop_noticed_at"] - r["stopped_at"]) * 1000 for r in runs if "stop_noticed_at" in r]
    return {
        "yielded_after_stop": yielded,
        "delivered_after_stop": delivered,
        "delivered_share": 100 * delivered / yielded if yielded > 0 else None,
        "endings": dict(Counter(r["ending"] for r in runs)),
        "stop_noticed_p50_ms": percentile(noticed, 50) if noticed else None,
    }


async def stop(bench: Bench) -> Figure:
    """A graceful stop mid-stream: every item the engine yields after it reaches the client, then STOPPED."""
    n = bench.sizes.stop_streams
    found = {"project": _summary(await _project_stops(bench, n))}
    if bench.peer is not None:
        peer_runs = await bench.peer.agent.call(
            "stop", timeout=SLACK + n, streams=n, before=BEFORE, drain=DRAIN, pace=STOP_PACE
        )
        found["peer"] = _summary(peer_runs["runs"])
    project, peer = found["project"], found.get("peer", {})
    return Figure(
        "stop",
        f"a stop after {BEFORE} items; the engine yields {DRAIN} more: what reaches the client",
        metrics=[
            Metric(
                "delivered after stop",
                "% of yielded",
                project["delivered_share"],
                None,
                Target("value", "==", 100, "all"),
                peer=peer.get("delivered_share"),
            ),
            Metric(
                "stop to engine noticed, p50",
                "ms",
                project["stop_noticed_p50_ms"],
                None,
                peer=peer.get("stop_noticed_p50_ms"),
            ),
        ],
        baseline_label="none (bare gRPC has no graceful stop)",
        details={**peer_details(bench), "streams": n, "pace_ms": STOP_PACE * 1000, **found},
    )
