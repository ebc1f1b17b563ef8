"""Migration across a fleet of real replicas (benchmarks/fleet.py): a resumable stream survives its replica's
SIGKILL, drain (SIGTERM) and freeze (SIGSTOP, found by keepalive) with every item exactly once; a stream that is
not resumable ends Unavailable under the same faults, never looking complete."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from benchmarks.fleet import Fleet, FleetError, fleet, wait_serving
from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server import FinishReason, Unavailable

# A frozen replica is found within the ping timeout (2 s here, 5 s by default) by the pings grpc sends anyway.
KEEPALIVE = [
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 2_000),
    ("grpc.http2.ping_timeout_ms", 2_000),
]
N = 60
FAULTS = ["kill", "drain", "freeze"]


@pytest.fixture(scope="module")
def replicas() -> Iterator[Fleet]:
    # A drain hands resumable streams off after 0.2 s, and stops (then kills) the others 0.3 s later.
    args = ["--drain-timeout", "0.2", "--stop-timeout", "0.3", "--kill-timeout", "0.5"]
    with fleet(3, targets=["tests.engines:registry"], args=args) as started:
        yield started


@pytest.fixture
def three(replicas: Fleet) -> Iterator[Fleet]:
    """Three serving replicas for each test: the one a test took down is replaced afterwards."""
    yield replicas
    for replica in replicas.replicas:
        if replica.alive:
            try:
                wait_serving(replica.address, timeout=2)
            except (grpc.RpcError, FleetError):
                replica.close()  # frozen, or draining: gone for good
    while sum(r.alive for r in replicas.replicas) < 3:
        replicas.add()


def owner_of(f: Fleet, pid: str) -> int:
    [index] = [r.index for r in f.replicas if r.alive and str(r.proc.pid) == pid]
    return index


def inject(f: Fleet, fault: str, index: int) -> None:
    {"kill": f.kill, "drain": f.drain, "freeze": f.freeze}[fault](index)


async def run(
    f: Fleet, engine: str, request: CountRequest | EchoRequest, at: int, fault: str, migration_limit: int = 3
) -> tuple[list[str | int], FinishReason | None, BaseException | None, int]:
    """Stream ``request``; once ``at`` items have arrived, inject ``fault`` into the replica serving it.

    Returns what arrived (indexes, or texts), the finish reason, the error raised (if any), and the migrations.
    """
    received: list[str | int] = []
    async with EngineClient([f.target], options=KEEPALIVE, migration_limit=migration_limit) as c:
        typed = (await c.get(engine)).downcast(type(request), CountResponse if engine == "ticks" else EchoResponse)
        assert typed is not None
        stream = await typed.generate(request)
        error: BaseException | None = None
        owner = -1
        try:
            async for item in stream:
                if isinstance(item, EchoResponse):
                    if owner < 0:
                        owner = owner_of(f, item.text)  # `pid` names its process first
                        continue
                    received.append(item.text)
                elif isinstance(item, CountResponse):
                    received.append(item.index)
                    owner = owner if owner >= 0 else owner_of(f, item.payload)
                if len(received) == at:
                    await asyncio.to_thread(inject, f, fault, owner)
        except Unavailable as raised:
            error = raised
        return received, stream.finish_reason, error, c.migrations


@pytest.mark.parametrize("fault", FAULTS)
def test_a_resumable_stream_survives_its_replica_every_item_exactly_once(three: Fleet, fault: str) -> None:
    received, finish, error, migrations = asyncio.run(
        run(three, "ticks", CountRequest(count=N, delay_s=0.01), 10, fault)
    )
    assert error is None and finish is FinishReason.COMPLETED
    assert received == list(range(N))  # no gap, no duplicate
    assert migrations == 1


@pytest.mark.parametrize("fault", FAULTS)
def test_a_stream_that_is_not_resumable_ends_unavailable_or_stopped_never_complete(three: Fleet, fault: str) -> None:
    words = " ".join(f"w{i}" for i in range(N))
    received, finish, error, migrations = asyncio.run(
        run(three, "pid", EchoRequest(text=words, delay_s=0.01), 10, fault)
    )
    assert 10 <= len(received) < N and migrations == 0
    if fault == "drain":
        # The drain asks it to stop (it honours stops): a truncated stream that says so, as before.
        assert error is None and finish is FinishReason.STOPPED
    else:
        assert isinstance(error, Unavailable) and finish is None


def test_a_stop_asked_before_the_replica_dies_carries_over_and_the_stream_ends_stopped(three: Fleet) -> None:
    async def scenario() -> tuple[list[int], FinishReason | None, int]:
        async with EngineClient([three.target], options=KEEPALIVE) as c:
            ticks = (await c.get("ticks")).downcast(CountRequest, CountResponse)
            assert ticks is not None
            stream = await ticks.generate(CountRequest(count=N, delay_s=0.01))
            received: list[int] = []
            async for item in stream:
                received.append(item.index)
                if len(received) == 5:
                    stream.context.stop_generating()  # `ticks` ignores it: it runs on, and its replica dies
                    await asyncio.to_thread(three.kill, owner_of(three, item.payload))
            return received, stream.finish_reason, c.migrations

    received, finish, migrations = asyncio.run(scenario())
    assert received == list(range(N)) and finish is FinishReason.STOPPED and migrations == 1


def test_past_the_migration_limit_the_stream_raises_unavailable(three: Fleet) -> None:
    received, finish, error, migrations = asyncio.run(
        run(three, "ticks", CountRequest(count=N, delay_s=0.01), 10, "kill", migration_limit=0)
    )
    assert isinstance(error, Unavailable) and finish is None and received == list(range(len(received)))
    assert migrations == 0


def test_engine_client_follows_its_stream_to_another_replica_and_prints_the_new_stop_key(three: Fleet) -> None:
    command = [str(Path(sys.executable).parent / "engine-client"), "--target", three.target, "generate", "ticks"]
    proc = subprocess.Popen(
        [*command, json.dumps({"count": N, "delay_s": 0.01})], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        started = proc.stderr.readline()
        assert started.startswith("started: request id ") and ", served by " in started, started
        first_owner = started.rsplit(", served by ", 1)[1].strip()
        [owner] = [r.index for r in three.replicas if r.address == first_owner]
        lines = [proc.stdout.readline() for _ in range(10)]
        three.kill(owner)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    indexes = [int(json.loads(line)["index"]) for line in [*lines, *out.splitlines()]]  # 64-bit: JSON strings
    assert indexes == list(range(N))  # every item exactly once, in order
    [continued] = [line for line in err.splitlines() if line.startswith("continued: ")]
    key, served_by = continued.split(", stop key ")[1].split(", served by ")
    assert served_by.strip() != first_owner and served_by.strip() in {r.address for r in three.replicas if r.alive}
    assert key and key not in started  # the new call's own key
    assert err.splitlines()[-1].startswith(f"completed: {N} items")


def test_an_idle_stream_on_a_frozen_replica_is_found_by_keepalive_and_continues_elsewhere(three: Fleet) -> None:
    """No item is flowing when the host freezes: only the client's keepalive pings can tell it is gone."""

    async def scenario() -> tuple[list[CountResponse], int, float]:
        async with EngineClient([three.target], options=KEEPALIVE) as c:
            ticks = (await c.get("ticks")).downcast(CountRequest, CountResponse)
            assert ticks is not None
            stream = await ticks.generate(CountRequest(count=0, delay_s=30))  # one item, then 30 s of nothing
            received: list[CountResponse] = []
            loop = asyncio.get_running_loop()
            frozen_at = 0.0
            async for item in stream:
                received.append(item)
                if len(received) == 1:
                    await asyncio.to_thread(three.freeze, owner_of(three, item.payload))
                    frozen_at = loop.time()
                else:
                    break  # the next item came from the replica it continued on: enough
            return received, c.migrations, loop.time() - frozen_at

    received, migrations, waited = asyncio.run(scenario())
    assert [item.index for item in received] == [0, 1] and migrations == 1
    assert received[1].payload != received[0].payload  # another process served it
    assert waited < 20  # found by the pings (5 s apart, 2 s to answer here), long before the engine's next item
