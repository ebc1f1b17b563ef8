"""Prometheus metrics, scraped over HTTP from a real server after real traffic."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server.app import EngineServer, StartupError
from tests.conftest import ServerFactory
from tests.helpers import Samples, collect, fetch_metrics, generate_request, stop_request, value

pytestmark = pytest.mark.asyncio


async def scrape(server: EngineServer) -> Samples:
    assert server.metrics_url is not None
    return await asyncio.to_thread(fetch_metrics, server.metrics_url)


async def first_item_then(call: grpc.aio.UnaryStreamCall[pb.GenerateRequest, pb.GenerateResponse]) -> str:
    """Wait for the call's first message and return its request id."""
    await call.read()
    return str(dict(await call.initial_metadata() or ())["x-request-id"])


async def final_code(call: grpc.aio.UnaryStreamCall[pb.GenerateRequest, pb.GenerateResponse]) -> grpc.StatusCode:
    """Read the call to its end (an OK status arrives only after every message) and return its status."""
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
    except grpc.aio.AioRpcError as error:
        return error.code()
    return await call.code()


async def test_metrics_are_off_by_default(server: EngineServer) -> None:
    assert server.metrics is None and server.metrics_url is None


async def test_every_end_is_counted_by_status_and_cause(make_server: ServerFactory) -> None:
    server = await make_server(metrics_port=0, drain_timeout=0.1, stop_timeout=0.3)
    endless = CountRequest(count=0, delay_s=0.01)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        done = await collect(stub, "echo", EchoRequest(text="a b c"), EchoResponse)
        assert done.code is grpc.StatusCode.OK and len(done.items) == 3

        cancelled = stub.Generate(generate_request("probe", endless))
        await first_item_then(cancelled)
        cancelled.cancel()

        late = await collect(stub, "probe", endless, CountResponse, timeout=0.2)
        assert late.code is grpc.StatusCode.DEADLINE_EXCEEDED

        stopped = stub.Generate(generate_request("probe", endless))
        await first_item_then(stopped)
        await stub.Stop(await stop_request(stopped))
        assert await final_code(stopped) is grpc.StatusCode.OK

        killed = stub.Generate(generate_request("probe", endless))
        await first_item_then(killed)
        await stub.Stop(await stop_request(killed, kill=True))
        assert await final_code(killed) is grpc.StatusCode.ABORTED
        assert await server.inflight.wait_empty(10)

        # The drain stops the probe (it honours the stop) and then kills the stubborn engine (it does not).
        honours = stub.Generate(generate_request("probe", endless))
        ignores = stub.Generate(generate_request("stubborn", EchoRequest()))
        await first_item_then(honours)
        await first_item_then(ignores)
        await server.drain()
        assert await final_code(honours) is grpc.StatusCode.OK
        assert await final_code(ignores) is grpc.StatusCode.UNAVAILABLE

    samples = await scrape(server)  # the endpoint outlives the drain
    assert value(samples, "engine_requests_total", engine="echo", code="OK") == 1
    assert value(samples, "engine_requests_total", engine="probe", code="OK") == 2
    for code in ("CANCELLED", "DEADLINE_EXCEEDED", "ABORTED"):
        assert value(samples, "engine_requests_total", engine="probe", code=code) == 1, code
    assert value(samples, "engine_requests_total", engine="stubborn", code="UNAVAILABLE") == 1
    for cause in ("client_cancel", "deadline", "stop_request"):
        assert value(samples, "engine_kills_total", engine="probe", cause=cause) == 1, cause
    assert value(samples, "engine_kills_total", engine="stubborn", cause="drain") == 1
    assert value(samples, "engine_stops_total", engine="probe", cause="stop_request") == 1
    assert value(samples, "engine_stops_total", engine="probe", cause="drain") == 1
    assert value(samples, "engine_stops_total", engine="stubborn", cause="drain") == 0
    # The echo engine produced its three words at once: they may share a message, never exceed three.
    assert value(samples, "engine_items_sent_total", engine="echo") == 3
    assert 1 <= value(samples, "engine_messages_sent_total", engine="echo") <= 3
    assert value(samples, "engine_items_sent_total", engine="probe") >= 5
    for engine in ("echo", "probe", "stubborn", "count"):
        assert value(samples, "engine_requests_in_flight", engine=engine) == 0, engine
    assert value(samples, "engine_request_duration_seconds_count", engine="probe") == 5
    assert value(samples, "engine_time_to_first_response_seconds_count", engine="echo") == 1
    # The deadline call may end before its first item; every other probe call sent one.
    assert value(samples, "engine_time_to_first_response_seconds_count", engine="probe") >= 4
    assert value(samples, "engine_time_to_first_response_seconds_bucket", engine="echo", le="+Inf") == 1
    assert ("process_cpu_seconds_total", frozenset()) in samples


async def test_in_flight_is_a_live_gauge(make_server: ServerFactory) -> None:
    server = await make_server(metrics_port=0)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        call = stub.Generate(generate_request("probe", CountRequest(count=0, delay_s=0.01)))
        await first_item_then(call)
        assert value(await scrape(server), "engine_requests_in_flight", engine="probe") == 1
        call.cancel()
        assert await server.inflight.wait_empty(10)
    assert value(await scrape(server), "engine_requests_in_flight", engine="probe") == 0


async def test_servers_in_one_process_keep_their_own_metrics(make_server: ServerFactory) -> None:
    busy = await make_server(metrics_port=0)
    idle = await make_server(metrics_port=0)
    assert busy.metrics_url != idle.metrics_url
    async with grpc.aio.insecure_channel(busy.addresses[0]) as channel:
        out = await collect(pbg.EngineServiceStub(channel), "echo", EchoRequest(text="x"), EchoResponse)
    assert out.code is grpc.StatusCode.OK
    assert value(await scrape(busy), "engine_requests_total", engine="echo", code="OK") == 1
    assert value(await scrape(idle), "engine_requests_total", engine="echo", code="OK") == 0


async def test_a_metrics_port_in_use_is_a_startup_error(make_server: ServerFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=rf"cannot serve metrics on 127\.0\.0\.1:{port}: .*--metrics-port"):
            await make_server(metrics_port=port)


async def test_refused_calls_are_counted_without_client_chosen_labels(make_server: ServerFactory) -> None:
    server = await make_server(metrics_port=0, max_engine_concurrency=1)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        assert (await collect(stub, "no-such-engine", EchoRequest(), EchoResponse)).code is grpc.StatusCode.NOT_FOUND
        wrong = await collect(stub, "echo", CountRequest(), EchoResponse)
        assert wrong.code is grpc.StatusCode.INVALID_ARGUMENT
        call = stub.Generate(generate_request("probe", CountRequest(delay_s=0.01)))
        await first_item_then(call)
        busy = await collect(stub, "probe", CountRequest(count=1), CountResponse)
        assert busy.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        call.cancel()
    samples = await scrape(server)
    assert value(samples, "engine_requests_refused_total", engine="", code="NOT_FOUND") == 1
    assert value(samples, "engine_requests_refused_total", engine="echo", code="INVALID_ARGUMENT") == 1
    assert value(samples, "engine_requests_refused_total", engine="probe", code="RESOURCE_EXHAUSTED") == 1
    assert "no-such-engine" not in str(samples)
