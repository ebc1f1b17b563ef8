"""Refusals carry gRFC A6 retry pushback (retry a limit or a drain elsewhere, nothing else); streams name their
replica in `x-served-by`."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server.advertise import advertised_address
from engine_runtime.server.app import ServerConfig
from engine_runtime.server.protocol import PUSHBACK_KEY, PUSHBACK_MS, SERVED_BY_KEY
from tests.conftest import ServerFactory
from tests.helpers import collect, first_reply, generate_request


def pushback(trailing: Any) -> str | None:
    return dict(trailing or ()).get(PUSHBACK_KEY)


@pytest.mark.asyncio
async def test_a_limit_refusal_asks_for_a_retry_and_bad_calls_ask_for_none(make_server: ServerFactory) -> None:
    server = await make_server(max_concurrency=1)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        hold: Any = stub.Generate(generate_request("probe", CountRequest(delay_s=0.05)))
        await first_reply(hold)
        full = await collect(stub, "echo", EchoRequest(text="x"), EchoResponse)
        assert full.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert pushback(full.trailing) == str(PUSHBACK_MS)
        hold.cancel()
        for engine, message, code in [
            ("no-such-engine", EchoRequest(), grpc.StatusCode.NOT_FOUND),
            ("echo", CountRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            out = await collect(stub, engine, message, EchoResponse)
            assert out.code is code
            assert pushback(out.trailing) == "-1"  # A6: negative, do not retry


@pytest.mark.asyncio
async def test_a_draining_server_asks_for_a_retry_elsewhere(make_server: ServerFactory) -> None:
    server = await make_server()
    server.service.draining = True  # what EngineServer.drain sets first
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        out = await collect(pbg.EngineServiceStub(channel), "echo", EchoRequest(text="x"), EchoResponse)
    assert out.code is grpc.StatusCode.UNAVAILABLE
    assert pushback(out.trailing) == str(PUSHBACK_MS)


@pytest.mark.asyncio
async def test_a_failure_after_the_start_carries_no_pushback(make_server: ServerFactory) -> None:
    server = await make_server()
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        out = await collect(pbg.EngineServiceStub(channel), "fails_with", EchoRequest(text="UNAVAILABLE"), EchoResponse)
    assert out.code is grpc.StatusCode.UNAVAILABLE
    assert pushback(out.trailing) is None


@pytest.mark.asyncio
async def test_every_stream_names_the_replica_that_serves_it(make_server: ServerFactory) -> None:
    server = await make_server()
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        call: Any = pbg.EngineServiceStub(channel).Generate(generate_request("count", CountRequest(count=1)))
        metadata = dict(await call.initial_metadata())
        async for _ in call:
            pass
    assert metadata[SERVED_BY_KEY] == server.addresses[0]


@pytest.mark.asyncio
async def test_the_advertised_address_can_be_set(make_server: ServerFactory) -> None:
    server = await make_server(advertise_address="10.1.2.3:50051")
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        out = await collect(pbg.EngineServiceStub(channel), "count", CountRequest(count=1), CountResponse)
        call: Any = pbg.EngineServiceStub(channel).Generate(generate_request("count", CountRequest(count=1)))
        metadata = dict(await call.initial_metadata())
        call.cancel()
    assert out.code is grpc.StatusCode.OK
    assert metadata[SERVED_BY_KEY] == "10.1.2.3:50051"


def test_a_wildcard_host_advertises_the_machines_own_address() -> None:
    address = advertised_address(ServerConfig(host="0.0.0.0"), 50051, ["0.0.0.0:50051"])
    assert address.endswith(":50051") and not address.startswith("0.0.0.0")
    assert advertised_address(ServerConfig(uds="/tmp/s", no_tcp=True), None, ["unix:/tmp/s"]) == "unix:/tmp/s"
