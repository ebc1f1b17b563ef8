"""The Python blocks of docs/concepts.md, client.md, operations.md and deployment.md run, in order, against real
servers.

Each page's blocks are fragments of one session, as a reader types them into `python -m asyncio`: they run in
one namespace, with top-level `await`, the page's usual imports, and the page's addresses pointed at real
servers started here.
"""

from __future__ import annotations

import ast
import re
import types
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine_runtime.client import EngineClient
from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import EchoRequest, EchoResponse
from engine_runtime.server import EngineRegistry, tracing
from engine_runtime.server.app import EngineServer, ServerConfig
from engine_runtime.server.examples import registry as examples
from tests.processes import ROOT

pytestmark = pytest.mark.asyncio

PRELUDE = """
from collections.abc import AsyncIterator, Iterator
import grpc
from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server import Context, EngineRegistry
"""


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / page).read_text(), flags=re.S)


async def run_blocks(blocks: list[str], namespace: dict[str, Any]) -> None:
    for block in [PRELUDE, *blocks]:
        code = compile(block, "<doc block>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = types.FunctionType(code, namespace)()
        if result is not None:
            await result


async def test_the_concepts_blocks_run() -> None:
    namespace: dict[str, Any] = {}
    await run_blocks(python_blocks("concepts.md"), namespace)
    stream = namespace["stream"]
    assert [item.text async for item in stream] == ["a", "b"]
    rows = namespace["registry"].get("rows")
    assert [item.index async for item in await rows.generate(namespace["CountRequest"](count=3))] == [0, 1, 2]


async def test_the_client_blocks_run_against_real_servers() -> None:
    async with (
        EngineServer(examples, ServerConfig(port=0)) as near,
        EngineServer(examples, ServerConfig(port=0)) as far,
    ):
        blocks = [
            block.replace("127.0.0.1:50051", near.addresses[0]).replace("far:50051", far.addresses[0])
            for block in python_blocks("client.md")
        ]
        namespace: dict[str, Any] = {}
        # The page's last block composes an engine the prose calls `upstream_echo`: a remote echo, kept open.
        async with EngineClient(near.addresses[0]) as upstream:
            namespace["upstream_echo"] = (await upstream.get("echo")).downcast(EchoRequest, EchoResponse)
            await run_blocks(blocks, namespace)
            assert namespace["stream"].finish_reason is not None
            assert {"count_far", "shout_remote"} <= set(namespace["registry"].names())
            shout = namespace["registry"].get("shout_remote")
            assert [item.text async for item in await shout.generate(EchoRequest(text="a b"))] == ["A", "B"]


async def test_the_operations_blocks_run_tracing_and_a_health_request() -> None:
    """The tracing block turns tracing on (its in-memory exporter sees a call's two spans); the health block's
    engine is served, and its health request keeps it SERVING."""
    namespace: dict[str, Any] = {"registry": EngineRegistry()}
    try:
        await run_blocks(python_blocks("operations.md"), namespace)
        async with (
            EngineServer(namespace["registry"], ServerConfig(port=0)) as server,
            EngineClient(server.addresses[0]) as client,
            grpc.aio.insecure_channel(server.addresses[0]) as channel,
        ):
            search = (await client.get("search")).downcast(EchoRequest, EchoResponse)
            assert search is not None
            assert [item.text async for item in await search.generate(EchoRequest(text="q"))] == ["q"]
            health: Any = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service="search"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        tracing.disable()
    spans = namespace["exporter"].get_finished_spans()
    assert sorted(span.name for span in spans) == ["engine.generate search"] * 2


async def test_the_deployment_block_balances_over_a_dns_name() -> None:
    """The page's channel, its cluster name pointed at `localhost` with a real server's port."""
    async with EngineServer(examples, ServerConfig(port=0)) as server:
        port = server.addresses[0].rsplit(":", 1)[1]
        (block,) = python_blocks("deployment.md")
        namespace: dict[str, Any] = {"grpc": grpc}
        exec(block.replace("engine-server.my-namespace.svc.cluster.local:50051", f"localhost:{port}"), namespace)
        channel: grpc.aio.Channel = namespace["channel"]
        try:
            stub = pbg.EngineServiceStub(channel)
            reply = await stub.ListEngines(pb.ListEnginesRequest(), timeout=10, wait_for_ready=True)
            assert "echo" in {info.name for info in reply.engines}
        finally:
            await channel.close()
