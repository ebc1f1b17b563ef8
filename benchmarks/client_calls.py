"""First response through each one's own Python client: ``EngineClient`` against the origin's runtime's client.

A one-item request of the ``count`` engine (16-byte item), timed from the call to the first item in hand, as an
application sees it: the project through ``EngineClient`` (``await engine.generate(...)`` then its first item,
decoded), the origin's runtime through its own ``Client.generate`` (timed in its client process), and the bare
server through raw stubs for reference. All on the harness's loop (uvloop where installed; the peer's client
always runs on uvloop). The three are alternated in chunks of ``CHUNK`` calls, so that each sees the same
moments of a noisy machine.
"""

from __future__ import annotations

import statistics
import time

from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse

from .clients import Client
from .harness import Bench, peer_details
from .report import Figure, Metric, Target, percentile

__all__ = ["client_first_response"]

PAYLOAD = 16
CHUNK = 10
SLACK = 30.0


async def _bare_chunk(client: Client, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start, first = time.perf_counter(), None
        async for _message in client.count(1, PAYLOAD, timeout=SLACK):
            if first is None:
                first = time.perf_counter() - start
        assert first is not None
        times.append(first * 1000)
    return times


async def client_first_response(bench: Bench) -> Figure:
    """Time to the first response through each one's Python client; target: at most the origin's (p50, p99)."""
    times: dict[str, list[float]] = {"project": [], "bare": [], "peer": []}
    request = CountRequest(count=1, size=PAYLOAD)
    async with (
        EngineClient(bench.servers["project"].address, timeout=SLACK) as project,
        bench.clients("bare") as (bare,),
    ):
        engine = (await project.get("count")).downcast(CountRequest, CountResponse)
        assert engine is not None

        async def project_chunk(calls: int) -> list[float]:
            chunk = []
            for _ in range(calls):
                start, first = time.perf_counter(), None
                async for _item in await engine.generate(request):
                    if first is None:
                        first = time.perf_counter() - start
                assert first is not None
                chunk.append(first * 1000)
            return chunk

        await project_chunk(CHUNK)  # warm-up: connections, descriptors, code paths
        await _bare_chunk(bare, CHUNK)
        if bench.peer is not None:
            await bench.peer.agent.call("first_response", calls=CHUNK)
        for done in range(0, bench.sizes.first_response_calls, CHUNK):
            calls = min(CHUNK, bench.sizes.first_response_calls - done)
            times["project"] += await project_chunk(calls)
            times["bare"] += await _bare_chunk(bare, calls)
            if bench.peer is not None:
                times["peer"] += (await bench.peer.agent.call("first_response", calls=calls))["ms"]
    peer = times["peer"] or None
    at_most = Target("ratio", "<=", 1.0, "<= origin")
    return Figure(
        "client_first_response",
        "first response through each one's Python client, one-item request",
        metrics=[
            Metric(
                "median",
                "ms",
                statistics.median(times["project"]),
                statistics.median(times["bare"]),
                peer=peer and statistics.median(peer),
                peer_target=at_most,
            ),
            Metric(
                "p99",
                "ms",
                percentile(times["project"], 99),
                percentile(times["bare"], 99),
                peer=peer and percentile(peer, 99),
                peer_target=at_most,
            ),
        ],
        baseline_label="bare grpc.aio, raw stubs",
        details={**peer_details(bench), "calls": bench.sizes.first_response_calls, "chunk": CHUNK},
    )
