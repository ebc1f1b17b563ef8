"""Health conventions: the service's own name, `liveness` through a drain, and `List`."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest
from tests.conftest import ServerFactory
from tests.helpers import first_reply, generate_request, wait_not_serving

pytestmark = pytest.mark.asyncio

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
List: Any = health_pb2  # the type stubs predate List's messages


async def statuses(stub: Any) -> dict[str, int]:
    reply = await stub.List(List.HealthListRequest(), timeout=10)
    return {name: response.status for name, response in reply.statuses.items()}


async def test_readiness_liveness_and_each_engine_are_served_and_listed(make_server: ServerFactory) -> None:
    server = await make_server()
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        for name in ("", "engine.v1.EngineService", "liveness", "echo"):
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=10)
            assert reply.status == SERVING, name
        listed = await statuses(stub)
        assert {"", "engine.v1.EngineService", "liveness", *server.registry.names()} <= set(listed)
        assert set(listed.values()) == {SERVING}


async def test_liveness_stays_serving_while_the_server_drains(make_server: ServerFactory) -> None:
    server = await make_server(drain_timeout=10, stop_timeout=1)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        live = stub.Watch(health_pb2.HealthCheckRequest(service="liveness"), timeout=30)
        assert (await live.read()).status == SERVING
        running = pbg.EngineServiceStub(channel).Generate(generate_request("probe", CountRequest(delay_s=0.01)))
        await first_reply(running)
        drain = asyncio.ensure_future(server.drain())
        await wait_not_serving(channel, "engine.v1.EngineService")
        listed = await statuses(stub)
        assert listed[""] == listed["engine.v1.EngineService"] == listed["echo"] == NOT_SERVING
        assert listed["liveness"] == SERVING
        reply = await stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=10)
        assert reply.status == SERVING
        running.cancel()
        live.cancel()
        await drain
