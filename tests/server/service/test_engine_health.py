"""Engine health: a declared health request, run while the engine is idle, observed through grpc.health.v1 Watch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
import pytest_asyncio
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import EchoRequest, EchoResponse
from engine_runtime.server import Context, EngineRegistry
from engine_runtime.server.app import EngineServer, ServerConfig
from engine_runtime.server.logs import log_request
from tests.helpers import fetch_metrics, generate_request, value

pytestmark = pytest.mark.asyncio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH = EchoRequest(text="health?")
Request = health_pb2.HealthCheckRequest
Reply = health_pb2.HealthCheckResponse


class Switch:
    """What the `moody` engine does with its health request: answer, raise, or hang; and what it saw."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.runs = 0
        self.hung_runs_killed = 0
        self._changed = asyncio.Event()

    def changed(self) -> None:
        self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 10) -> None:
        """Wait, at most ``timeout`` seconds, for ``condition`` to hold."""
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


def moody_registry(switch: Switch) -> EngineRegistry:
    registry = EngineRegistry()

    @registry.engine("moody", request=EchoRequest, response=EchoResponse, health_request=HEALTH)
    async def moody(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
        """Health runs do what the switch says; a client request streams until it is stopped."""
        if request != HEALTH:
            while not ctx.is_stopped():
                yield EchoResponse(text="busy")
                await asyncio.sleep(0.01)
            return
        switch.runs += 1
        switch.changed()
        if switch.mode == "fail":
            raise RuntimeError("not feeling well")
        if switch.mode == "hang":
            try:
                await asyncio.Event().wait()
            finally:
                switch.hung_runs_killed += ctx.is_killed()
                switch.changed()
        yield EchoResponse(text="fine")

    @registry.engine("plain", request=EchoRequest, response=EchoResponse)
    async def plain(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
        """Declares no health request: always SERVING."""
        yield EchoResponse(text=request.text)

    return registry


async def next_status(statuses: AsyncIterator[Reply], wanted: int, timeout: float = 10) -> None:
    """Read the Watch stream until it reports ``wanted``."""
    async with asyncio.timeout(timeout):
        async for reply in statuses:
            if reply.status == wanted:
                return
    raise AssertionError("the Watch stream ended")


def watch(channel: grpc.aio.Channel, service: str) -> grpc.aio.UnaryStreamCall[Message, Reply]:
    """``grpc.health.v1.Health/Watch`` (the stubs' typing of HealthStub has no methods)."""
    method = channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=Request.SerializeToString,
        response_deserializer=Reply.FromString,
    )
    return method(Request(service=service))


async def serving(channel: grpc.aio.Channel, service: str) -> int:
    method = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=Request.SerializeToString,
        response_deserializer=Reply.FromString,
    )
    reply: Reply = await method(Request(service=service))
    return reply.status


@pytest.fixture
def switch() -> Switch:
    return Switch()


Make = Callable[..., EngineServer]


@pytest.fixture
def make(switch: Switch) -> Make:
    """An EngineServer (not started) of the `moody` engines, checked every 50 ms."""

    def make(**config: object) -> EngineServer:
        config = {"port": 0, "engine_health_interval": 0.05, "engine_health_timeout": 0.5, **config}
        return EngineServer(moody_registry(switch), ServerConfig(**config))  # type: ignore[arg-type]

    return make


@pytest_asyncio.fixture
async def server(make: Make) -> AsyncIterator[EngineServer]:
    async with make() as server:
        yield server


@pytest_asyncio.fixture
async def channel(server: EngineServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        yield channel


async def test_failing_health_request_turns_the_engine_not_serving_and_back(
    channel: grpc.aio.Channel, switch: Switch
) -> None:
    call = watch(channel, "moody")
    statuses = aiter(call)
    await next_status(statuses, SERVING)
    switch.mode = "fail"
    await next_status(statuses, NOT_SERVING)
    # The server as a whole, and an engine without a health request, are not affected.
    assert await serving(channel, "") == SERVING
    assert await serving(channel, "plain") == SERVING
    switch.mode = "ok"
    await next_status(statuses, SERVING)
    call.cancel()


async def test_a_health_run_past_its_timeout_is_killed_and_counts_as_a_failure(make: Make, switch: Switch) -> None:
    switch.mode = "hang"
    async with (
        make(engine_health_timeout=0.1) as server,
        grpc.aio.insecure_channel(server.addresses[0]) as channel,
    ):
        call = watch(channel, "moody")
        statuses = aiter(call)
        await next_status(statuses, NOT_SERVING)
        await switch.until(lambda: switch.hung_runs_killed >= 1)
        switch.mode = "ok"
        await next_status(statuses, SERVING)
        call.cancel()


async def test_a_busy_engine_is_not_checked(server: EngineServer, channel: grpc.aio.Channel, switch: Switch) -> None:
    await switch.until(lambda: switch.runs >= 1)
    call = pbg.EngineServiceStub(channel).Generate(generate_request("moody", EchoRequest(text="work")))
    await call.read()
    runs = switch.runs
    # A negative: no health run may start during many intervals while a generation of the engine is in flight.
    await asyncio.sleep(10 * server.config.engine_health_interval)
    assert switch.runs == runs
    call.cancel()
    await switch.until(lambda: switch.runs > runs)


async def test_health_runs_are_not_client_requests(
    make: Make, switch: Switch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with make(metrics_port=0) as server:
        server.service.on_finished(log_request)
        await switch.until(lambda: switch.runs >= 3)
        assert server.metrics_url is not None
        samples = await asyncio.to_thread(fetch_metrics, server.metrics_url)
    for name in ("engine_items_sent_total", "engine_messages_sent_total", "engine_request_duration_seconds_count"):
        assert value(samples, name, engine="moody") == 0, name
    assert value(samples, "engine_requests_total", engine="moody", code="OK") == 0
    assert not [r for r in caplog.records if r.name == "engine_runtime.requests"]


async def test_draining_stops_the_health_runs(server: EngineServer, switch: Switch) -> None:
    await switch.until(lambda: switch.runs >= 1)
    await server.drain()
    runs = switch.runs
    await asyncio.sleep(5 * server.config.engine_health_interval)
    assert switch.runs == runs
