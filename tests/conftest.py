"""Fixtures: the real server on 127.0.0.1 port 0, in this process, and real channels to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack

import grpc
import pytest
import pytest_asyncio

from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.server.app import EngineServer, ServerConfig
from tests.engines import registry
from tests.processes import ServerProcess, tracked_servers

ServerFactory = Callable[..., Awaitable[EngineServer]]


@pytest_asyncio.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """Start servers with the test engines and any ServerConfig fields; all are killed at the end."""
    async with AsyncExitStack() as stack:

        async def start(**config: object) -> EngineServer:
            config.setdefault("port", 0)
            server = EngineServer(registry, ServerConfig(**config))  # type: ignore[arg-type]
            await stack.enter_async_context(server)
            return server

        yield start


@pytest_asyncio.fixture
async def server(make_server: ServerFactory) -> EngineServer:
    return await make_server()


@pytest_asyncio.fixture
async def channel(server: EngineServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        await channel.channel_ready()
        yield channel


@pytest_asyncio.fixture
async def stub(channel: grpc.aio.Channel) -> pbg.EngineServiceAsyncStub:
    return pbg.EngineServiceStub(channel)


@pytest.fixture
def start_server() -> Iterator[type[ServerProcess]]:
    """Start `engine-server` subprocesses: `start_server(*args).wait_listening()`; all are killed at the end."""
    yield from tracked_servers()
