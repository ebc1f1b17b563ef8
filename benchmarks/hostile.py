"""Figure (m), the hostile mix (SPEC section 8): well-behaved streams beside misbehaving engines and clients.

A server of its own (``--kill-timeout 0.2``) serves rounds of well-behaved paced streams (``count``, 10 ms
apart), first alone (the baseline column: the same server, quiet) and then, round for round, beside a hostile mix:

- engines that raise ``SystemExit`` and ``KeyboardInterrupt``, fail, leak ``CancelledError``, or swallow their kill
  (:mod:`.engines`), each call with a 1 s deadline;
- clients that never read a stream of large items, open a ``Session`` and never send its first message, send half
  a message over raw HTTP/2 and go silent, cancel calls at random points, or open hundreds of streams at once
  on one connection and read none.

After every round health must answer SERVING. Reported: how many well-behaved streams completed with exactly
their items (target: all), how the bad engines' calls ended (target: each with INTERNAL, or by its own
deadline for the engine that ignores its kill), health answered after every round, the server process still
up, and what the mix costs the well-behaved streams (inter-item gap and first item, against the quiet rounds).
The client helpers are shared with ``tests/server/hardening/test_hostile_mix.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine_runtime.generated.engine.v1 import engine_pb2_grpc
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest

from .clients import channel, generate_request
from .harness import PROJECT_TARGETS, Bench
from .procs import project_command, running
from .report import Figure, Metric, Target, percentile

if TYPE_CHECKING:  # the async stub exists in the type stubs only
    from engine_runtime.generated.engine.v1.engine_pb2_grpc import EngineServiceAsyncStub as Stub

__all__ = ["cancel_storm", "half_a_message", "half_open_session", "hostile", "never_reads", "stream_flood"]

GOOD_ITEMS = 30
GOOD_PACE = 0.01
BAD_DEADLINE = 1.0
# What a bad engine's call may end with: INTERNAL, or its own deadline for the engine that ignores the kill.
BAD_ENDINGS = {"INTERNAL", "DEADLINE_EXCEEDED"}
# What each hostile round does besides its well-behaved streams (see _rounds).
PER_ROUND = {
    "bad_engine_calls": 10,
    "never_reading": 5,
    "half_open_sessions": 5,
    "half_a_message": 3,
    "cancelled_calls": 30,
    "streams_opened_at_once_on_one_connection": 300,
}
SERVER_EXTRA = ["--kill-timeout", "0.2", "--max-message-bytes", str(1024 * 1024)]


async def never_reads(stub: Stub, engine: str = "count") -> None:
    """A stream of 200 KB items held open for a second and never read: flow control stops the engine."""
    call = stub.Generate(generate_request(engine, CountRequest(count=1000, size=200_000)), timeout=2)
    await asyncio.sleep(1)
    call.cancel()


async def half_open_session(ch: grpc.aio.Channel) -> None:
    """A ``Session`` opened and its first message never sent; the client's deadline ends it."""
    call: Any = engine_pb2_grpc.EngineServiceStub(ch).Session(timeout=1)
    with contextlib.suppress(grpc.aio.AioRpcError):
        await call.read()


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _literal(name: str, value: str) -> bytes:
    # HPACK "literal header field without indexing, new name" (RFC 7541 6.2.2), short strings only.
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


async def half_a_message(address: str) -> None:
    """A raw HTTP/2 client: a Generate call whose one message says 100 bytes and sends 10, then silence."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    headers = b"".join(
        _literal(name, value)
        for name, value in (
            (":method", "POST"), (":scheme", "http"), (":path", "/engine.v1.EngineService/Generate"),
            (":authority", address), ("content-type", "application/grpc"), ("te", "trailers"),
        )
    )  # fmt: skip
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b""))
    writer.write(_frame(1, 0x4, 1, headers) + _frame(0, 0, 1, b"\x00" + (100).to_bytes(4, "big") + b"x" * 10))
    await writer.drain()
    await asyncio.sleep(1)  # holding the half-sent message
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    del reader


async def cancel_storm(stub: Stub, rng: random.Random, engine: str, calls: int = 30) -> None:
    """``calls`` endless streams of ``engine`` (1 ms apart), each cancelled at once or after its first message."""
    started = [
        stub.Generate(generate_request(engine, CountRequest(count=1_000_000, delay_s=0.001))) for _ in range(calls)
    ]
    for call in started:
        if rng.random() < 0.5:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call.read()
        call.cancel()


async def stream_flood(address: str, streams: int) -> None:
    """One connection opening ``streams`` slow streams at once and reading none, for a second."""
    async with channel(address, private=True) as ch:
        stub: Stub = engine_pb2_grpc.EngineServiceStub(ch)
        calls = [
            stub.Generate(generate_request("count", CountRequest(count=100, delay_s=0.05)), timeout=5)
            for _ in range(streams)
        ]
        await asyncio.sleep(1)
        for call in calls:
            call.cancel()


async def _bad_engine(stub: Stub, rng: random.Random) -> str:
    engine, message = rng.choice(
        [
            ("exits", EchoRequest(text="exit")),
            ("exits", EchoRequest(text="interrupt")),
            ("swallows_kill", CountRequest()),
            ("fails", EchoRequest()),
            ("leaks_cancel", EchoRequest()),
        ]
    )
    try:
        async for _ in stub.Generate(generate_request(engine, message), timeout=BAD_DEADLINE):
            pass
    except grpc.aio.AioRpcError as error:
        return str(error.code().name)
    return "OK"


async def _good(stub: Stub, gaps: list[float], firsts: list[float]) -> bool:
    started = time.perf_counter()
    indexes: list[int] = []
    last = None
    reply = None
    try:
        async for reply in stub.Generate(
            generate_request("count", CountRequest(count=GOOD_ITEMS, delay_s=GOOD_PACE)), timeout=60
        ):
            now = time.perf_counter()
            if reply.items:
                if last is None:
                    firsts.append((now - started) * 1000)
                else:
                    gaps.append((now - last) * 1000)
                last = now
            indexes.extend(CountResponse.FromString(item.value).index for item in reply.items)
    except grpc.aio.AioRpcError:
        return False
    return indexes == list(range(GOOD_ITEMS)) and reply is not None and reply.finish_reason != 0


async def _rounds(address: str, rounds: int, good: int, hostile: bool) -> dict[str, Any]:
    rng = random.Random(11)
    gaps: list[float] = []
    firsts: list[float] = []
    completed = healthy = 0
    bad: Counter[str] = Counter()
    async with channel(address) as ch:
        stub: Stub = engine_pb2_grpc.EngineServiceStub(ch)
        health: Any = health_pb2_grpc.HealthStub(ch)
        for _ in range(rounds):
            wells = [asyncio.ensure_future(_good(stub, gaps, firsts)) for _ in range(good)]
            if hostile:
                n = PER_ROUND
                bads = [asyncio.ensure_future(_bad_engine(stub, rng)) for _ in range(n["bad_engine_calls"])]
                await asyncio.gather(
                    *(never_reads(stub) for _ in range(n["never_reading"])),
                    *(half_open_session(ch) for _ in range(n["half_open_sessions"])),
                    *(half_a_message(address) for _ in range(n["half_a_message"])),
                    cancel_storm(stub, rng, "cancel_probe", n["cancelled_calls"]),
                    stream_flood(address, n["streams_opened_at_once_on_one_connection"]),
                )
                bad.update(await asyncio.gather(*bads))
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            healthy += reply.status == health_pb2.HealthCheckResponse.SERVING
            completed += sum(await asyncio.gather(*wells))
    return {"completed": completed, "healthy": healthy, "bad": dict(bad), "gaps": gaps, "firsts": firsts}


async def hostile(bench: Bench) -> Figure:
    """(m) Well-behaved streams beside a hostile mix: all complete, health answers, the server stays up."""
    s = bench.sizes
    rounds, good = s.hostile_rounds, s.hostile_good
    cpus = bench.pinning.server_cpus if bench.pinning.applied else []
    command = project_command(PROJECT_TARGETS, bench.loop, SERVER_EXTRA)
    with running("hostile-mix server", command, cpus) as server:
        quiet = await _rounds(server.address, rounds, good, hostile=False)
        mixed = await _rounds(server.address, rounds, good, hostile=True)
        up = server.proc.poll() is None
    total = rounds * good
    bad = mixed["bad"]
    return Figure(
        "hostile",
        f"hostile mix: {total} well-behaved streams beside misbehaving engines and clients",
        metrics=[
            Metric(
                "well-behaved completed",
                "streams",
                mixed["completed"],
                quiet["completed"],
                target=Target("value", "==", total, "all"),
            ),
            Metric(
                "bad engines' calls ended as expected",
                "calls",
                sum(n for code, n in bad.items() if code in BAD_ENDINGS),
                target=Target("value", "==", sum(bad.values()), "all"),
            ),
            Metric(
                "health SERVING after each round",
                "rounds",
                mixed["healthy"],
                target=Target("value", "==", rounds, "all"),
            ),
            Metric("server process up at the end", "", int(up), target=Target("value", "==", 1, "yes")),
            Metric(
                "well-behaved inter-item gap p99", "ms", percentile(mixed["gaps"], 99), percentile(quiet["gaps"], 99)
            ),
            Metric(
                "well-behaved first item p50", "ms", percentile(mixed["firsts"], 50), percentile(quiet["firsts"], 50)
            ),
        ],
        baseline_label="the same server, no hostile mix",
        details={
            "rounds": rounds,
            "well_behaved_per_round": good,
            "well_behaved_items": GOOD_ITEMS,
            "pace_ms": GOOD_PACE * 1000,
            "bad_engine_calls": bad,
            "hostile_per_round": PER_ROUND,
            "quiet_completed": quiet["completed"],
            "gap_p50_ms": {"hostile": percentile(mixed["gaps"], 50), "quiet": percentile(quiet["gaps"], 50)},
        },
    )
