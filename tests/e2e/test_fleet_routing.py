"""A fleet of real replicas (127.0.0.2, .3, .4) behind one `ipv4:` target: Stop reaches the owner, refusals are
retried elsewhere and started calls never, weighted round-robin steers new calls away from the loaded replica."""

from __future__ import annotations

import asyncio
import collections
import itertools
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from benchmarks.fleet import Fleet, fleet
from engine_runtime.client import EngineClient
from engine_runtime.client.remote import RemoteStream
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.generated.xds.service.orca.v3 import orca_pb2, orca_pb2_grpc
from engine_runtime.server.errors import Aborted, EngineNotFound, ResourceExhausted, Unavailable
from engine_runtime.server.stream import FinishReason, ResponseStream
from tests.helpers import first_reply, generate_request, wait_not_serving
from tests.processes import BIN

ARGS = ["tests.engines:registry"]
pytestmark = pytest.mark.asyncio

OPTIONS = ["--log-format", "json", "--drain-timeout", "1", "--stop-timeout", "1", "--kill-timeout", "0.5"]


@pytest.fixture
def three() -> Iterator[Fleet]:
    with fleet(3, ARGS, OPTIONS) as f:
        yield f


def remote(stream: ResponseStream[Any]) -> RemoteStream:
    assert isinstance(stream, RemoteStream)
    return stream


async def spread(probe: Any, f: Fleet, each: int) -> list[RemoteStream]:
    """Endless probe streams until every replica runs ``each`` of them (bounded), the extra ones killed."""
    kept: dict[str, list[RemoteStream]] = {address: [] for address in f.addresses}
    for _ in range(20 * each * len(f)):
        stream = remote(await probe.generate(CountRequest(delay_s=0.02)))
        owner = kept[await stream.served_by()]
        if len(owner) < each:
            owner.append(stream)
        else:
            await stream.aclose()
        if all(len(streams) == each for streams in kept.values()):
            return [stream for streams in zip(*kept.values(), strict=True) for stream in streams]
    raise AssertionError(f"the calls did not reach every replica: {[len(s) for s in kept.values()]}")


def records_of(f: Fleet, request_id: str) -> list[tuple[int, dict[str, Any]]]:
    return [(r.index, rec) for r in f.replicas for rec in r.records() if rec.get("request_id") == request_id]


async def test_stop_by_id_through_the_fleet_target_reaches_the_owner_every_time(three: Fleet) -> None:
    async with EngineClient(three.target) as client, EngineClient(three.target) as other:
        probe = (await client.get("probe")).downcast(CountRequest, CountResponse)
        assert probe is not None
        streams = await spread(probe, three, 3)  # three on each replica
        for stream in streams:
            assert await stream.next_batch()
            # Another client, which never saw the stream, stops it by id and key alone.
            await other.stop(stream.context.id, key=await stream.stop_key())
            rest = [item async for item in stream]
            assert stream.finish_reason is FinishReason.STOPPED, rest
        with pytest.raises(EngineNotFound):
            await other.stop(streams[0].context.id, key=await streams[0].stop_key())  # over: nowhere now
        live = remote(await probe.generate(CountRequest(delay_s=0.02)))
        assert await live.next_batch()
        with pytest.raises(EngineNotFound):
            await other.stop(live.context.id, key="wrong")  # the owner keeps its key
        await other.stop(live.context.id, key=await live.stop_key(), kill=True)
        with pytest.raises(Aborted, match="killed by a stop request"):
            async for _ in live:
                pass


async def test_engine_client_stop_reaches_the_owner_through_the_fleet_target(three: Fleet) -> None:
    async with EngineClient(three.target) as client:
        probe = (await client.get("probe")).downcast(CountRequest, CountResponse)
        assert probe is not None
        streams = await spread(probe, three, 1)
        for stream in streams:
            assert await stream.next_batch()
            command = [str(BIN / "engine-client"), "--target", three.target, "stop", stream.context.id]
            done = await asyncio.to_thread(
                subprocess.run, [*command, "--key", await stream.stop_key()], capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            assert f"stop asked: generation {stream.context.id}" in done.stderr
            async for _ in stream:
                pass
            assert stream.finish_reason is FinishReason.STOPPED
        gone = await asyncio.to_thread(
            subprocess.run, [*command, "--key", "x"], capture_output=True, text=True, timeout=60
        )
        assert gone.returncode != 0 and "NOT_FOUND" in gone.stderr and "Traceback" not in gone.stderr


async def until_picks_favour(echo: Any, address: str, streak: int = 20, timeout: float = 15.0) -> None:
    """Call until ``streak`` calls in a row land on ``address``.

    Until each replica has reported for the policy's blackout period (1 s), weighted round-robin picks evenly, and
    a call can meet a busy replica on every one of its attempts (two busy replicas of three: (2/3)^4, one call in
    five) and fail RESOURCE_EXHAUSTED; those are tolerated here. Once the weights count, the free replica takes
    nearly every pick.
    """
    deadline, run = time.monotonic() + timeout, 0
    while run < streak:
        assert time.monotonic() < deadline, f"the picks never favoured {address}"
        try:
            stream = remote(await echo.generate(EchoRequest(text="warm up")))
            [_ async for _ in stream]
        except ResourceExhausted:
            run = 0
            continue
        run = run + 1 if await stream.served_by() == address else 0


async def test_a_refused_call_is_retried_on_another_replica_and_a_started_one_never() -> None:
    # Replicas 0 and 1 take one generation each and are kept busy; replica 2 is free.
    busy = {0: ["--max-concurrency", "1"], 1: ["--max-concurrency", "1"]}
    with fleet(3, ARGS, OPTIONS, replica_args=busy) as f:
        channels = [grpc.aio.insecure_channel(f[i].address) for i in (0, 1)]
        holds = [
            pbg.EngineServiceStub(ch).Generate(generate_request("probe", CountRequest(delay_s=0.05))) for ch in channels
        ]
        for hold in holds:
            await first_reply(hold)
        async with EngineClient(f.target) as client:
            echo = (await client.get("echo")).downcast(EchoRequest, EchoResponse)
            assert echo is not None
            await until_picks_favour(echo, f[2].address)
            served: collections.Counter[str] = collections.Counter()
            for n in range(12):
                stream = remote(await echo.generate(EchoRequest(text=f"call {n}")))
                assert [item.text async for item in stream] == ["call", str(n)]
                served[await stream.served_by()] += 1
            assert served == {f[2].address: 12}  # every call succeeded, on the free replica
            refused = [
                rec for i in (0, 1) for rec in f[i].records() if rec.get("status") == "RESOURCE_EXHAUSTED"
            ]  # the busy replicas did see attempts, refused with pushback, that the client retried
            assert refused, "no call was picked for a busy replica: nothing was retried"

            # A generation that started and then failed with a retryable code is not tried again anywhere.
            fails = (await client.get("fails_with")).downcast(EchoRequest, EchoResponse)
            assert fails is not None
            stream = remote(await fails.generate(EchoRequest(text="UNAVAILABLE")))
            with pytest.raises(Unavailable, match="on purpose"):
                async for _ in stream:
                    pass
            owner = f.addresses.index(await stream.served_by())
            f[owner].wait_for_record(lambda rec: rec.get("request_id") == stream.context.id)
            assert [i for i, _ in records_of(f, stream.context.id)] == [owner]  # the engine ran exactly once
        for hold in holds:
            hold.cancel()
        await asyncio.gather(*(ch.close() for ch in channels))


async def test_a_stream_whose_replica_dies_is_not_run_again_elsewhere(three: Fleet) -> None:
    async with EngineClient(three.target) as client:
        # `echo` is not resumable: its client may not move it either, so only grpc's retry could run it again.
        echo = (await client.get("echo")).downcast(EchoRequest, EchoResponse)
        assert echo is not None
        stream = remote(await echo.generate(EchoRequest(text="w " * 200, delay_s=0.02)))
        first = (await stream.next_batch())[0]
        owner = three.addresses.index(await stream.served_by())
        three.kill(owner)
        with pytest.raises(Unavailable):
            async for _ in stream:
                pass
        assert first.text == "w"
        # Had grpc retried it, another replica would be running it now: every other one reports nothing in flight.
        for i in range(3):
            if i != owner:
                report = await one_report(three[i].address)
                assert report.named_metrics["inflight"] == 0.0


async def one_report(address: str, interval: float = 0.2) -> Any:
    async with grpc.aio.insecure_channel(address) as channel:
        request = orca_pb2.OrcaLoadReportRequest()
        request.report_interval.FromNanoseconds(int(interval * 1e9))
        call = orca_pb2_grpc.OpenRcaServiceStub(channel).StreamCoreMetrics(request, timeout=10)
        report = await call.read()
        call.cancel()
        return report


async def test_new_calls_go_to_the_replica_that_is_not_loaded() -> None:
    with fleet(2, ARGS, OPTIONS) as f:
        async with grpc.aio.insecure_channel(f[0].address) as channel:
            stub = pbg.EngineServiceStub(channel)
            longs = [stub.Generate(generate_request("probe", CountRequest(delay_s=0.2))) for _ in range(30)]
            for call in longs:
                await first_reply(call)
            async with EngineClient(f.target) as client:
                echo = (await client.get("echo")).downcast(EchoRequest, EchoResponse)
                assert echo is not None
                served: list[str] = []
                for _ in range(80):  # 4 s: the weights need a report (1 s) and the blackout (1 s) to take effect
                    stream = remote(await echo.generate(EchoRequest(text="x")))
                    served.append(await stream.served_by())
                    assert [item.text async for item in stream] == ["x"]
                    await asyncio.sleep(0.05)
            for call in longs:
                call.cancel()
        later = collections.Counter(served[40:])
        # Both replicas' own records say where the calls went: the loaded one got few of them.
        logged = collections.Counter(r.index for r in f.replicas for rec in r.records() if rec.get("engine") == "echo")
        assert logged[0] + logged[1] == 80
        assert later[f[1].address] >= 34, (later, logged)  # at least 85% of the later calls


async def test_orca_reports_of_a_real_replica_at_the_interval_asked() -> None:
    with fleet(3, ARGS, [*OPTIONS, "--max-concurrency", "8"]) as f:
        async with grpc.aio.insecure_channel(f[1].address) as channel:
            stub = pbg.EngineServiceStub(channel)
            calls = [stub.Generate(generate_request("probe", CountRequest(delay_s=0.05))) for _ in range(4)]
            for call in calls:
                await first_reply(call)
            request = orca_pb2.OrcaLoadReportRequest()
            request.report_interval.FromMilliseconds(200)
            reports = orca_pb2_grpc.OpenRcaServiceStub(channel).StreamCoreMetrics(request, timeout=30)
            got = []
            async for report in reports:
                got.append((time.monotonic(), report))
                if len(got) == 4:
                    break
            reports.cancel()
            for call in calls:
                call.cancel()
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(got)]
    assert all(0.18 <= gap < 1.0 for gap in gaps), gaps
    for _, report in got:
        assert report.named_metrics["inflight"] == 4.0
        assert report.named_metrics["queued"] == 0.0
        assert report.application_utilization == pytest.approx((4 / 8) ** 3)  # four of eight, cubed
        assert report.rps_fractional >= 4 / 60


async def test_a_draining_replica_gets_no_new_calls_and_nothing_fails() -> None:
    with fleet(3, ARGS, [*OPTIONS, "--drain-timeout", "30"]) as f:
        async with EngineClient(f.target) as client, grpc.aio.insecure_channel(f[0].address) as channel:
            echo = (await client.get("echo")).downcast(EchoRequest, EchoResponse)
            assert echo is not None
            # A stream keeps replica 0 draining while the calls are made.
            hold: Any = pbg.EngineServiceStub(channel).Generate(generate_request("probe", CountRequest(delay_s=0.05)))
            await first_reply(hold)
            f.drain(0)
            await wait_not_serving(channel, "engine.v1.EngineService")
            served: collections.Counter[str] = collections.Counter()
            for _ in range(20):
                stream = remote(await echo.generate(EchoRequest(text="x")))
                assert [item.text async for item in stream] == ["x"]
                served[await stream.served_by()] += 1
            hold.cancel()
        assert f[0].address not in served and sum(served.values()) == 20
        # The client's health checks dropped it from the pick: at most a call racing the NOT_SERVING was refused.
        assert len([rec for rec in f[0].records() if rec.get("finish") == "refused"]) <= 1
