"""The server survives its engines: an engine that raises SystemExit or ignores its kill harms only its own call."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server.zombies import ZOMBIES
from tests.conftest import ServerFactory
from tests.engines import PROBES
from tests.helpers import collect, fetch_metrics, generate_request, stop_request, value

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("how", ["exit", "interrupt"])
async def test_an_engine_raising_system_exit_ends_only_its_own_call_internal(
    make_server: ServerFactory, how: str
) -> None:
    server = await make_server()
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        bystanders = [
            asyncio.ensure_future(collect(stub, "count", CountRequest(count=20, delay_s=0.01), CountResponse))
            for _ in range(3)
        ]
        out = await collect(stub, "exits", EchoRequest(text=how), EchoResponse)
        assert out.code is grpc.StatusCode.INTERNAL
        assert "exits" in out.details and "Traceback" not in out.details and "SystemExit" not in out.details
        assert [i.text for i in out.items] == ["before"]
        for done in await asyncio.gather(*bystanders):
            assert done.code is grpc.StatusCode.OK and len(done.items) == 20
        after = await collect(stub, "echo", EchoRequest(text="still serving"), EchoResponse)
        assert [i.text for i in after.items] == ["still", "serving"]


async def test_engines_that_ignore_their_kill_still_end_their_calls_and_free_their_slots(
    make_server: ServerFactory,
) -> None:
    server = await make_server(max_concurrency=2, kill_timeout=0.3, metrics_port=0)
    assert server.metrics_url is not None
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        calls = []
        for n in range(2):
            call = stub.Generate(generate_request("swallows_kill", CountRequest(count=3), request_id=f"zombie-{n}"))
            await call.read()
            calls.append(call)
        full = await collect(stub, "echo", EchoRequest(text="refused"), EchoResponse)
        assert full.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        for call in calls:
            await stub.Stop(await stop_request(call, kill=True))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(call.read(), 10)
            assert info.value.code() is grpc.StatusCode.ABORTED
        assert await server.inflight.wait_empty(10)
        admitted = await collect(stub, "echo", EchoRequest(text="admitted"), EchoResponse)
        assert admitted.code is grpc.StatusCode.OK
        zombies = value(
            await asyncio.to_thread(fetch_metrics, server.metrics_url), "engine_zombie_tasks", engine="swallows_kill"
        )
        assert zombies >= 1
        # Cancelled again every kill timeout, they give up after ignoring three cancellations.
        for n in range(2):
            await asyncio.wait_for(PROBES[f"zombie-{n}"].ended.wait(), 10)
            assert PROBES[f"zombie-{n}"].exit == "cancelled after ignoring 3"
    assert len(ZOMBIES) == 0


async def test_a_blocking_async_engine_is_named_in_a_stall_warning_and_counted(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server(loop_stall_warning=0.1, metrics_port=0)
    assert server.metrics_url is not None
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        out = await collect(
            pbg.EngineServiceStub(channel), "blocks_loop", EchoRequest(), EchoResponse, request_id="b-1"
        )
        assert out.code is grpc.StatusCode.OK
    # The warning is written once the loop is back; wait for it within a bound.
    for _ in range(100):
        stalls = [r for r in caplog.records if r.name == "engine_runtime.watchdog"]
        if stalls:
            break
        await asyncio.sleep(0.05)
    [stall] = stalls
    assert vars(stall)["engine"] == "blocks_loop" and vars(stall)["request_id"] == "b-1"
    assert vars(stall)["stall_s"] >= 0.3 and "time.sleep" in stall.getMessage()
    samples = await asyncio.to_thread(fetch_metrics, server.metrics_url)
    assert value(samples, "engine_event_loop_stall_seconds_count", engine="blocks_loop") == 1
