"""Remote engines composed across servers: stop and kill travel every hop; replicas each get their own stop."""

from __future__ import annotations

import asyncio
import socket
import warnings
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from engine_runtime.client import EngineClient, RemoteStream
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse
from engine_runtime.server import Context, EngineNotFound, EngineRegistry, FinishReason, Unavailable
from engine_runtime.server.app import EngineServer, ServerConfig
from tests.engines import PROBES, registry

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def two_hops() -> AsyncIterator[EngineClient]:
    """client -> middle server ("relay", a remote engine registered again) -> far server ("probe")."""
    async with EngineServer(registry, ServerConfig(port=0)) as far, EngineClient(far.addresses[0]) as to_far:
        middle_registry = EngineRegistry()
        remote_probe = (await to_far.get("probe")).downcast(CountRequest, CountResponse)
        assert remote_probe is not None
        middle_registry.register("relay", remote_probe, description="probe, one server further")
        async with (
            EngineServer(middle_registry, ServerConfig(port=0)) as middle,
            EngineClient(middle.addresses[0]) as client,
        ):
            yield client


async def far_probe(request_id: str) -> str:
    probe = PROBES[request_id + ".1"]  # the middle hop runs the far generation on a child context
    await asyncio.wait_for(probe.ended.wait(), 10)
    return f"{probe.exit} killed={probe.killed_in_finally}"


async def test_kill_travels_two_hops(two_hops: EngineClient) -> None:
    relay = (await two_hops.get("relay")).downcast(CountRequest, CountResponse)
    assert relay is not None
    ctx = Context()
    stream = await relay.generate(CountRequest(delay_s=0.01), ctx)
    async for item in stream:
        if item.index == 2:
            ctx.kill()
    assert (await far_probe(ctx.id)).endswith("killed=True")


async def test_stop_travels_two_hops(two_hops: EngineClient) -> None:
    relay = (await two_hops.get("relay")).downcast(CountRequest, CountResponse)
    assert relay is not None
    ctx = Context()
    stream = await relay.generate(CountRequest(delay_s=0.01), ctx)
    got = []
    async for item in stream:
        got.append(item.index)
        if item.index == 2:
            ctx.stop_generating()
    assert got == list(range(len(got))) and len(got) >= 3
    assert stream.finish_reason is FinishReason.STOPPED
    assert await far_probe(ctx.id) == "stopped killed=False"


async def test_leaving_the_loop_kills_two_hops_away(two_hops: EngineClient) -> None:
    relay = (await two_hops.get("relay")).downcast(CountRequest, CountResponse)
    assert relay is not None
    ctx = Context()
    async for _ in await relay.generate(CountRequest(delay_s=0.01), ctx):
        break
    assert (await far_probe(ctx.id)).endswith("killed=True")


@pytest_asyncio.fixture
async def replicas() -> AsyncIterator[tuple[EngineServer, EngineServer, EngineClient]]:
    """Two servers of the same engines, and one client spreading its calls over both."""
    async with (
        EngineServer(registry, ServerConfig(port=0)) as a,
        EngineServer(registry, ServerConfig(port=0)) as b,
        EngineClient([a.addresses[0], b.addresses[0]]) as client,
    ):
        yield a, b, client


async def test_replicas_share_calls_and_each_stop_reaches_its_replica(
    replicas: tuple[EngineServer, EngineServer, EngineClient],
) -> None:
    a, b, client = replicas
    probe = (await client.get("probe")).downcast(CountRequest, CountResponse)
    assert probe is not None
    streams = [await probe.generate(CountRequest(delay_s=0.01)) for _ in range(4)]
    for stream in streams:
        assert await stream.next_batch()
    assert len(a.inflight) == 2 and len(b.inflight) == 2
    for stream in streams:
        stream.context.stop_generating()  # in-band: no Stop call that could land on the wrong replica
    for stream in streams:
        while await stream.next_batch():
            pass
        assert stream.finish_reason is FinishReason.STOPPED
        assert PROBES[stream.context.id].exit == "stopped"
    # The client has its last message a moment before each server's handler has wound down.
    assert await a.inflight.wait_empty(10) and await b.inflight.wait_empty(10)


async def test_client_stop_by_id_finds_the_replica(replicas: tuple[EngineServer, EngineServer, EngineClient]) -> None:
    _, _, client = replicas
    probe = (await client.get("probe")).downcast(CountRequest, CountResponse)
    assert probe is not None
    streams = [await probe.generate(CountRequest(delay_s=0.01)) for _ in range(2)]
    for stream in streams:
        await stream.next_batch()
        assert isinstance(stream, RemoteStream)
        with pytest.raises(EngineNotFound):
            await client.stop(stream.context.id, key="not-its-key")
        await client.stop(stream.context.id, key=await stream.stop_key())
    for stream in streams:
        while await stream.next_batch():
            pass
        assert stream.finish_reason is FinishReason.STOPPED


async def test_downcast_warns_when_the_server_describes_a_type_differently() -> None:
    """Same full name, other fields: the downcast succeeds by name, and says that the descriptors differ."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    from engine_runtime.generated.examples.v1.examples_pb2 import EchoRequest, EchoResponse

    file = descriptor_pb2.FileDescriptorProto(name="other/echo.proto", package="examples.v1", syntax="proto3")
    message = file.message_type.add(name="EchoRequest")
    message.field.add(name="words", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    other_echo_request = message_factory.GetMessageClass(pool.FindMessageTypeByName("examples.v1.EchoRequest"))
    async with EngineServer(registry, ServerConfig(port=0)) as server, EngineClient(server.addresses[0]) as client:
        remote = await client.get("echo")
        with pytest.warns(UserWarning, match=r"describes examples\.v1\.EchoRequest differently"):
            assert remote.downcast(other_echo_request, EchoResponse) is not None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert remote.downcast(EchoRequest, EchoResponse) is not None  # the same descriptor: no warning


async def test_a_server_that_goes_away_mid_stream_is_a_clear_error_not_a_retry() -> None:
    from engine_runtime.server import Unavailable

    server = EngineServer(registry, ServerConfig(port=0))
    await server.start()
    try:
        async with EngineClient(server.addresses[0]) as client:
            probe = (await client.get("probe")).downcast(CountRequest, CountResponse)
            assert probe is not None
            stream = await probe.generate(CountRequest(delay_s=0.01))
            assert await stream.next_batch()
            await server.kill()  # every call is cancelled under the client
            with pytest.raises(Unavailable):
                while await stream.next_batch():
                    pass
            assert stream.finish_reason is None  # a truncated stream never looks complete
    finally:
        await server.kill()


async def test_a_failed_connect_is_unavailable() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        target = f"127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(Unavailable, match="cannot connect to"):
            async with EngineClient(target, connect_timeout=0.2):
                pass
