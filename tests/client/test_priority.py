"""Priority and the queue from the Python client: `EngineClient(priority=)`, `with_priority`, and a queued stream's
own stop and kill (the in-band control of its `Session`), against a real server with `--max-queue`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from engine_runtime.client import EngineClient
from engine_runtime.client.remote import RemoteStream
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse
from engine_runtime.server import Context, Engine, FinishReason, ResponseStream
from engine_runtime.server.app import EngineServer, ServerConfig
from tests.engines import PROBES, registry

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def server() -> AsyncIterator[EngineServer]:
    async with EngineServer(registry, ServerConfig(port=0, max_queue=4)) as server:
        yield server


async def single(client: EngineClient, priority: int | None = None) -> Engine[CountRequest, CountResponse]:
    remote = await client.get("single")
    typed = (remote if priority is None else remote.with_priority(priority)).downcast(CountRequest, CountResponse)
    assert typed is not None
    return typed


async def started(
    engine: Engine[CountRequest, CountResponse], request: CountRequest, name: str
) -> ResponseStream[CountResponse]:
    """A generation whose initial metadata has arrived: running, or waiting in the queue."""
    stream = await engine.generate(request, Context(f"{name}-{uuid.uuid4().hex[:8]}"))
    assert isinstance(stream, RemoteStream) and await stream.stop_key()
    return stream


async def test_the_clients_priority_and_with_priority_order_the_queue(server: EngineServer) -> None:
    async with EngineClient(server.addresses[0]) as plain, EngineClient(server.addresses[0], priority=3) as urgent:
        holder = await started(await single(plain), CountRequest(delay_s=0.01), "holder")
        assert [item.index for item in await holder.next_batch()] == [0]  # it runs
        one = CountRequest(count=1)
        streams = [
            await started(await single(plain), one, "default"),  # priority 0
            await started(await single(urgent), one, "client-3"),  # the client's priority
            await started(await single(plain, priority=7), one, "engine-7"),  # with_priority
            await started(await single(urgent, priority=-1), one, "engine-minus-1"),  # with_priority wins
        ]
        assert server.inflight.queued("single") == 4
        holder.context.stop_generating()
        async for _ in holder:
            pass
        for stream in streams:
            assert [item.index async for item in stream] == [0]
        ids = [stream.context.id for stream in streams]
        assert [i for i in PROBES if i in ids] == [ids[2], ids[1], ids[0], ids[3]]


async def test_a_queued_streams_own_stop_and_kill_end_it_before_its_engine_runs(server: EngineServer) -> None:
    async with EngineClient(server.addresses[0]) as client:
        engine = await single(client)
        holder = await started(engine, CountRequest(delay_s=0.01), "holder")
        assert [item.index for item in await holder.next_batch()] == [0]  # it runs
        stopped = await started(engine, CountRequest(count=3), "stopped")
        killed = await started(engine, CountRequest(count=3), "killed")
        stopped.context.stop_generating()  # in band, on the stream's own Session call
        assert [item async for item in stopped] == [] and stopped.finish_reason is FinishReason.STOPPED
        killed.context.kill()
        assert [item async for item in killed] == []
        holder.context.stop_generating()
        async for _ in holder:
            pass
        assert await server.inflight.wait_empty(10)
        assert stopped.context.id not in PROBES and killed.context.id not in PROBES
