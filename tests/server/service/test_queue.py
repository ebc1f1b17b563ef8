"""The admission queue (SPEC section 10) through the real servicer on loopback: order, every way out, limits.

The engine is `single` (the probe with `max_concurrency=1`); a call is queued once its initial metadata has
arrived while another holds the slot. Whether an engine ran is read from the probe's own record (`PROBES`), and
when a call left the queue from the queue's own hook, never from timing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import Any

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse
from engine_runtime.server import admission
from engine_runtime.server.app import EngineServer
from engine_runtime.server.inflight import Generation
from engine_runtime.server.logs import log_dequeued, log_request
from engine_runtime.server.outcome import Cause
from tests.conftest import ServerFactory
from tests.engines import PROBES
from tests.helpers import collect, fetch_metrics, first_reply, generate_request, rest, stop_request, value

pytestmark = pytest.mark.asyncio

PUSHBACK = ("grpc-retry-pushback-ms", "100")


def new_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


class Exits:
    """What the queue's `on_left` hook saw: each request id's cause, and an event per id."""

    def __init__(self, server: EngineServer) -> None:
        self.causes: dict[str, Cause | None] = {}
        self.events: dict[str, asyncio.Event] = {}
        server.inflight.admission.on_left(self.left)

    def left(self, generation: Generation, cause: Cause | None) -> None:
        self.causes[generation.id] = cause
        self.event(generation.id).set()

    def event(self, request_id: str) -> asyncio.Event:
        return self.events.setdefault(request_id, asyncio.Event())

    async def wait(self, request_id: str) -> Cause | None:
        await asyncio.wait_for(self.event(request_id).wait(), 10)
        return self.causes[request_id]


class Holder:
    """A `single` call that runs (it holds the slot) until it is stopped."""

    def __init__(self, stub: pbg.EngineServiceAsyncStub) -> None:
        self.id = new_id("holder")
        self.call = stub.Generate(generate_request("single", CountRequest(delay_s=0.01), self.id))

    @property
    def running(self) -> bool:
        return self.id in PROBES and not PROBES[self.id].ended.is_set()


async def hold(stub: pbg.EngineServiceAsyncStub) -> Holder:
    holder = Holder(stub)
    await first_reply(holder.call)
    return holder


async def enqueue(
    server: EngineServer, stub: pbg.EngineServiceAsyncStub, request_id: str, priority: int = 0, **kw: Any
) -> Any:
    """A `single` call of one item that waits in the queue: its initial metadata has come, its engine has not run."""
    before = server.inflight.queued("single")
    call = stub.Generate(generate_request("single", CountRequest(count=1), request_id, priority), **kw)
    metadata = dict(await call.initial_metadata() or ())
    assert metadata["x-request-id"] == request_id and metadata["x-stop-key"]
    assert server.inflight.queued("single") == before + 1 and request_id not in PROBES
    return call


async def release(stub: pbg.EngineServiceAsyncStub, holder: Holder) -> None:
    await stub.Stop(await stop_request(holder.call))
    assert [r.finish_reason for r in await rest(holder.call)][-1] == pb.FINISH_REASON_STOPPED


async def status(call: Any) -> tuple[grpc.StatusCode, str, list[pb.GenerateResponse], dict[str, Any]]:
    replies: list[pb.GenerateResponse] = []
    try:
        async for reply in call:
            replies.append(reply)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or "", replies, dict(error.trailing_metadata() or ())
    return grpc.StatusCode.OK, "", replies, dict(await call.trailing_metadata() or ())


async def test_calls_start_by_priority_then_by_arrival(make_server: ServerFactory) -> None:
    server = await make_server(max_queue=3)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        holder = await hold(stub)
        low, high, high_later = new_id("low"), new_id("high"), new_id("high-later")
        calls = [
            await enqueue(server, stub, low, priority=-1),
            await enqueue(server, stub, high, priority=5),
            await enqueue(server, stub, high_later, priority=5),
        ]
        assert server.inflight.queued() == 3 and server.inflight.running() == 1 and len(server.inflight) == 4
        await release(stub, holder)
        for call in calls:
            code, _, replies, _ = await status(call)
            assert code is grpc.StatusCode.OK and sum(len(r.items) for r in replies) == 1
        assert [i for i in PROBES if i in (low, high, high_later)] == [high, high_later, low]
        assert await server.inflight.wait_empty(10) and server.inflight.queued() == 0


@pytest.mark.parametrize("way", ["cancel", "stop", "kill", "deadline"])
async def test_each_way_out_removes_a_queued_call_at_once_and_its_engine_never_runs(
    make_server: ServerFactory, way: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server answers a queued call this long before its deadline, so that its status, not the client's own
    # timer, ends the call: wider here than the 20 ms it runs with, so that no scheduling delay decides the race.
    monkeypatch.setattr(admission, "DEADLINE_MARGIN", 0.3)
    server = await make_server(max_queue=3)
    exits = Exits(server)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        holder = await hold(stub)
        leaving, after = new_id(way), new_id("after")
        call = await enqueue(server, stub, leaving, timeout=0.5 if way == "deadline" else 30)
        behind = await enqueue(server, stub, after)
        if way == "cancel":
            call.cancel()
        elif way in ("stop", "kill"):
            await stub.Stop(await stop_request(call, kill=way == "kill"))
        cause = await exits.wait(leaving)
        # Out of the queue while the holder still runs: nothing but the way out took it out.
        assert server.inflight.queued("single") == 1 and holder.running
        expected = {"cancel": Cause.CLIENT_CANCEL, "deadline": Cause.DEADLINE}.get(way, Cause.STOP_REQUEST)
        assert cause is expected
        if way != "cancel":
            code, details, replies, _ = await status(call)
            if way == "stop":
                assert code is grpc.StatusCode.OK
                assert [(len(r.items), r.finish_reason) for r in replies] == [(0, pb.FINISH_REASON_STOPPED)]
            elif way == "kill":
                assert code is grpc.StatusCode.ABORTED and leaving in details
            else:
                assert code is grpc.StatusCode.DEADLINE_EXCEEDED, details
                assert re.search(r"waited 0\.\d{3}s in the queue of engine 'single'; the call's deadline", details)
        await release(stub, holder)
        assert (await status(behind))[0] is grpc.StatusCode.OK  # the slot went on to the next in line
        assert await server.inflight.wait_empty(10)
        assert leaving not in PROBES and after in PROBES


async def test_a_full_queue_refuses_with_a_pushback_and_the_limit(make_server: ServerFactory) -> None:
    server = await make_server(max_queue=3)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        holder = await hold(stub)
        queued = [await enqueue(server, stub, new_id("queued")) for _ in range(3)]
        out = await collect(stub, "single", CountRequest(count=1), CountResponse, request_id=new_id("refused"))
        assert out.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "'single'" in out.details and "max_concurrency=" in out.details and "--max-queue" in out.details
        assert PUSHBACK in tuple(out.trailing)
        assert server.inflight.queued() == 3  # the refused call never joined
        await release(stub, holder)
        assert [(await status(call))[0] for call in queued] == [grpc.StatusCode.OK] * 3


async def test_without_a_queue_the_limit_refuses_at_once_with_a_pushback(make_server: ServerFactory) -> None:
    server = await make_server()
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        holder = await hold(stub)
        out = await collect(stub, "single", CountRequest(count=1), CountResponse)
        assert out.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-queue" not in out.details
        assert PUSHBACK in tuple(out.trailing)
        await release(stub, holder)


async def test_the_servers_own_limit_still_refuses_at_once(make_server: ServerFactory) -> None:
    server = await make_server(max_queue=3, max_concurrency=1)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        holder = await hold(stub)
        out = await collect(stub, "single", CountRequest(count=1), CountResponse)
        assert out.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-concurrency" in out.details
        assert server.inflight.queued() == 0  # refused, not queued
        await release(stub, holder)


async def test_the_queue_timeout_ends_a_waiting_call_naming_the_time_waited(make_server: ServerFactory) -> None:
    server = await make_server(max_queue=3, queue_timeout=0.2)
    exits = Exits(server)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        holder = await hold(stub)
        waiting = new_id("waits")
        code, details, replies, trailing = await status(await enqueue(server, stub, waiting))
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED and not replies
        assert "waited 0.2" in details and "--queue-timeout 0.2s" in details
        assert trailing.get(PUSHBACK[0]) == PUSHBACK[1]
        assert await exits.wait(waiting) is Cause.QUEUE_TIMEOUT and holder.running
        await release(stub, holder)
        assert await server.inflight.wait_empty(10) and waiting not in PROBES


async def test_a_drain_answers_queued_calls_unavailable_before_it_stops_running_ones(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_queue=3, drain_timeout=0.5, stop_timeout=5)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        holder = await hold(stub)
        ids = [new_id("queued"), new_id("queued")]
        queued = [await enqueue(server, stub, request_id) for request_id in ids]
        drain = asyncio.ensure_future(server.drain())
        for call in queued:
            code, details, replies, trailing = await status(call)
            assert code is grpc.StatusCode.UNAVAILABLE and not replies and "shutting down" in details
            assert trailing.get(PUSHBACK[0]) == PUSHBACK[1]
        assert holder.running  # the running one drains on its own terms
        replies = await rest(holder.call)
        assert replies[-1].finish_reason == pb.FINISH_REASON_STOPPED  # stopped after the drain timeout
        await asyncio.wait_for(drain, 15)
        assert not any(request_id in PROBES for request_id in ids)


async def test_queue_metrics_and_the_log_line_of_a_call_that_waited(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await make_server(max_queue=3, metrics_port=0)
    server.inflight.admission.on_left(log_dequeued)
    server.service.on_finished(log_request)
    assert server.metrics_url is not None
    url = server.metrics_url
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        holder = await hold(stub)
        cancelled, admitted = new_id("cancelled"), new_id("admitted")
        first = await enqueue(server, stub, cancelled)
        second = await enqueue(server, stub, admitted, priority=-3)
        samples = await asyncio.to_thread(fetch_metrics, url)
        assert value(samples, "engine_queue_depth", engine="single") == 2
        first.cancel()
        await release(stub, holder)
        assert (await status(second))[0] is grpc.StatusCode.OK
        assert await server.inflight.wait_empty(10)
        await asyncio.sleep(0)  # the finished hooks run just after the call's handler
    samples = await asyncio.to_thread(fetch_metrics, url)
    assert value(samples, "engine_queue_depth", engine="single") == 0
    assert value(samples, "engine_queue_wait_seconds_count", engine="single") == 2
    assert value(samples, "engine_queue_exits_total", engine="single", cause="client_cancel") == 1
    assert value(samples, "engine_queue_exits_total", engine="single", cause="admitted") == 1
    # A queued call that never ran was never counted as running: the gauge is back to zero, not below.
    assert value(samples, "engine_requests_in_flight", engine="single") == 0
    assert value(samples, "engine_kills_total", engine="single", cause="client_cancel") == 1
    waited = {vars(r)["request_id"]: vars(r) for r in caplog.records if "queued_ms" in vars(r)}
    assert set(waited) == {cancelled, admitted}
    assert waited[cancelled]["left"] == "client_cancel" and waited[admitted]["left"] == "admitted"
    assert waited[admitted]["priority"] == -3 and waited[admitted]["queued_ms"] > 0
    assert f"request {admitted} waited" in caplog.text and "ms in the queue: admitted" in caplog.text
    finished = {vars(r)["request_id"]: vars(r) for r in caplog.records if "finish" in vars(r)}
    assert finished[cancelled]["status"] == "CANCELLED" and finished[cancelled]["items"] == 0
