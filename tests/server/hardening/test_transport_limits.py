"""Transport limits: streams per connection (HTTP/2 MAX_CONCURRENT_STREAMS), connections, idle connections."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from tests.conftest import ServerFactory
from tests.helpers import OWN_CONNECTION, collect, first_reply, generate_request

pytestmark = pytest.mark.asyncio


async def test_one_connection_holds_at_most_max_streams_per_connection(make_server: ServerFactory) -> None:
    server = await make_server(max_streams_per_connection=2)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        running = [stub.Generate(generate_request("probe", CountRequest(delay_s=0.01))) for _ in range(2)]
        for call in running:
            await first_reply(call)
        # The third waits on the client side for a free stream: it never reaches the server.
        waiting = await collect(stub, "echo", EchoRequest(text="third"), EchoResponse, timeout=0.5)
        assert waiting.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert len(server.inflight) == 2
        running[0].cancel()
        admitted = await collect(stub, "echo", EchoRequest(text="third"), EchoResponse)
        assert [i.text for i in admitted.items] == ["third"]
        running[1].cancel()


async def test_connections_past_max_connections_are_refused_and_health_still_answers(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_connections=2)
    address = server.addresses[0]
    async with contextlib.AsyncExitStack() as stack:
        channels = [
            await stack.enter_async_context(grpc.aio.insecure_channel(address, OWN_CONNECTION)) for _ in range(2)
        ]
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 10)
        extra = await stack.enter_async_context(grpc.aio.insecure_channel(address, OWN_CONNECTION))
        out = await collect(pbg.EngineServiceStub(extra), "echo", EchoRequest(text="x"), EchoResponse, timeout=1)
        assert out.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        health: Any = health_pb2_grpc.HealthStub(channels[0])
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        ok = await collect(pbg.EngineServiceStub(channels[1]), "count", CountRequest(count=2), CountResponse)
        assert ok.code is grpc.StatusCode.OK


async def test_an_idle_connection_is_closed_after_max_connection_idle(make_server: ServerFactory) -> None:
    server = await make_server(max_connection_idle=0.3)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        await channel.channel_ready()
        state = channel.get_state()
        for _ in range(200):  # bounded: the GOAWAY comes after about 0.3 s of no calls
            state = channel.get_state()
            if state is not grpc.ChannelConnectivity.READY:
                break
            await channel.wait_for_state_change(state)
        assert state is not grpc.ChannelConnectivity.READY
        # A new call reconnects.
        out = await collect(pbg.EngineServiceStub(channel), "echo", EchoRequest(text="back"), EchoResponse)
        assert out.code is grpc.StatusCode.OK


async def test_slow_readers_of_large_items_hold_at_most_the_output_budget(make_server: ServerFactory) -> None:
    server = await make_server(max_output_bytes=1024 * 1024)
    async with contextlib.AsyncExitStack() as stack:
        readers = []
        for _ in range(10):  # each on a connection of its own, none ever reading
            channel = await stack.enter_async_context(grpc.aio.insecure_channel(server.addresses[0], OWN_CONNECTION))
            readers.append(
                pbg.EngineServiceStub(channel).Generate(generate_request("count", CountRequest(count=50, size=300_000)))
            )
        for call in readers:
            await call.initial_metadata()
        held = [server.service.output.held]
        async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
            # Small items are never held up by the slow readers' budget.
            small = await collect(
                pbg.EngineServiceStub(channel), "count", CountRequest(count=100, size=10), CountResponse
            )
            assert small.code is grpc.StatusCode.OK and len(small.items) == 100
        held.append(server.service.output.held)
        assert max(held) <= 1024 * 1024
        for call in readers:
            call.cancel()
    assert await server.inflight.wait_empty(10)
    assert server.service.output.held == 0
