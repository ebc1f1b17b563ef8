"""A hostile mix: misbehaving engines and clients beside well-behaved streams, bounded in count and time.

Bad engines raise SystemExit and KeyboardInterrupt, swallow their kill, fail, and leak CancelledError. Bad
clients never read large items, open sessions and never send their first message, send half a message (raw
HTTP/2), and cancel calls at random points. Every well-behaved stream must complete with exactly its items,
the server must answer health throughout, and nothing may stay in flight afterwards. The figures are printed
for the issue notes (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.hostile import cancel_storm, half_a_message, half_open_session, never_reads
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server.zombies import ZOMBIES
from tests.conftest import ServerFactory
from tests.helpers import collect

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]

ROUNDS = 10
GOOD_PER_ROUND = 40


async def bad_engine(stub: pbg.EngineServiceAsyncStub, rng: random.Random) -> str:
    engine, request = rng.choice(
        [
            ("exits", EchoRequest(text="exit")),
            ("exits", EchoRequest(text="interrupt")),
            ("swallows_kill", CountRequest(count=2)),
            ("fails", EchoRequest()),
            ("leaks_cancel", EchoRequest()),
        ]
    )
    out = await collect(stub, engine, request, EchoResponse if engine != "swallows_kill" else CountResponse, timeout=1)
    return out.code.name


async def good(stub: pbg.EngineServiceAsyncStub, n: int) -> bool:
    out = await collect(stub, "count", CountRequest(count=n, delay_s=0.002), CountResponse, timeout=60)
    return out.code is grpc.StatusCode.OK and [i.index for i in out.items] == list(range(n))


async def test_every_well_behaved_stream_completes_beside_hostile_engines_and_clients(
    make_server: ServerFactory,
) -> None:
    server = await make_server(kill_timeout=0.2, max_message_bytes=1024 * 1024)
    rng = random.Random(11)
    started = time.monotonic()
    good_done = bad_done = 0
    bad_codes: dict[str, int] = {}
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        health: Any = health_pb2_grpc.HealthStub(channel)
        for _ in range(ROUNDS):
            wells = [asyncio.ensure_future(good(stub, rng.randrange(1, 60))) for _ in range(GOOD_PER_ROUND)]
            bads = [asyncio.ensure_future(bad_engine(stub, rng)) for _ in range(10)]
            hostile = [
                *(never_reads(stub) for _ in range(5)),
                *(half_open_session(channel) for _ in range(5)),
                *(half_a_message(server.addresses[0]) for _ in range(3)),
                cancel_storm(stub, rng, "probe"),
            ]
            await asyncio.gather(*hostile)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert all(await asyncio.gather(*wells))
            for code in await asyncio.gather(*bads):
                bad_codes[code] = bad_codes.get(code, 0) + 1
            good_done += len(wells)
            bad_done += len(bads)
        assert await server.inflight.wait_empty(15)
        for _ in range(100):  # bounded: zombies end at their next re-cancel (they give up after two)
            if not len(ZOMBIES):
                break
            await asyncio.sleep(0.1)
        assert len(ZOMBIES) == 0
    elapsed = time.monotonic() - started
    print(
        f"\nhostile mix: {good_done} well-behaved streams all complete; {bad_done} bad-engine calls {bad_codes}; "
        f"{ROUNDS * 5} never-reading, {ROUNDS * 5} half-open and {ROUNDS * 3} half-message clients; "
        f"{ROUNDS * 30} cancelled calls; {elapsed:.1f}s"
    )
    assert set(bad_codes) <= {"INTERNAL", "DEADLINE_EXCEEDED"}
