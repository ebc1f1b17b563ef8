"""Generate, Session and Stop end to end over loopback: finish reasons, kills, coalescing, descriptors."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server.app import EngineServer
from tests.engines import PROBES
from tests.helpers import collect, first_reply, generate_request, rest, start_session, stop_request

pytestmark = pytest.mark.asyncio


async def test_echo_streams_words_and_completes_with_the_request_id(stub: pbg.EngineServiceAsyncStub) -> None:
    out = await collect(stub, "echo", EchoRequest(text="hello streaming world"), EchoResponse, request_id="r-1")
    assert [i.text for i in out.items] == ["hello", "streaming", "world"]
    assert out.finish_reason == pb.FINISH_REASON_COMPLETED and out.request_id == "r-1"
    assert out.reasons[:-1] == [0] * (len(out.reasons) - 1)  # only the last message says how it finished


async def test_the_server_makes_a_request_id_when_none_is_given(stub: pbg.EngineServiceAsyncStub) -> None:
    out = await collect(stub, "reverse", EchoRequest(text="abc"), EchoResponse)
    assert [i.text for i in out.items] == ["cba"] and len(out.request_id) == 36


async def test_fast_items_are_coalesced_in_order(stub: pbg.EngineServiceAsyncStub) -> None:
    out = await collect(stub, "count", CountRequest(count=20_000, size=16), CountResponse)
    assert [i.index for i in out.items] == list(range(20_000))
    assert out.messages < 200
    assert out.finish_reason == pb.FINISH_REASON_COMPLETED


async def test_a_paced_engines_items_are_not_held_back(stub: pbg.EngineServiceAsyncStub) -> None:
    call = stub.Generate(generate_request("count", CountRequest(count=5, delay_s=0.1)))
    arrivals: list[float] = []
    sizes = []
    started = time.monotonic()
    async for reply in call:
        arrivals.extend(time.monotonic() - started for _ in reply.items)
        sizes.append(len(reply.items))
    # Each item leaves when it is produced, in a message of its own, not when a batch would be full.
    assert len(arrivals) == 5 and arrivals[-1] > 0.35
    assert [size for size in sizes if size] == [1, 1, 1, 1, 1]


async def test_stop_ends_the_stream_with_stopped(stub: pbg.EngineServiceAsyncStub) -> None:
    call = stub.Generate(generate_request("probe", CountRequest(delay_s=0.01), request_id="to-stop"))
    await first_reply(call)
    await stub.Stop(await stop_request(call))
    replies = await rest(call)
    assert replies[-1].finish_reason == pb.FINISH_REASON_STOPPED
    assert (await call.code()) is grpc.StatusCode.OK
    assert PROBES["to-stop"].exit == "stopped"


async def test_a_finished_generation_leaves_the_in_flight_table(stub: pbg.EngineServiceAsyncStub) -> None:
    await collect(stub, "echo", EchoRequest(text="x"), EchoResponse, request_id="done-1")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Stop(pb.StopRequest(request_id="done-1"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_killed_generation_leaves_the_in_flight_table(
    stub: pbg.EngineServiceAsyncStub, server: EngineServer
) -> None:
    call = stub.Generate(generate_request("probe", CountRequest(delay_s=0.01), request_id="gone-1"))
    await first_reply(call)
    stop = await stop_request(call)
    call.cancel()
    await asyncio.wait_for(PROBES["gone-1"].ended.wait(), 10)
    await asyncio.wait_for(server.inflight.wait_empty(10), 3)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Stop(stop)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_client_cancel_kills_the_engine(stub: pbg.EngineServiceAsyncStub) -> None:
    call = stub.Generate(generate_request("probe", CountRequest(delay_s=0.01), request_id="cancel-1"))
    await first_reply(call)
    call.cancel()
    probe = PROBES["cancel-1"]
    await asyncio.wait_for(probe.ended.wait(), 10)
    assert probe.exit in ("cancelled", "generator-exit") and probe.killed_in_finally is True


async def test_a_slow_reader_cancel_kills_the_engine_blocked_on_flow_control(stub: pbg.EngineServiceAsyncStub) -> None:
    # Big items and nobody reading: the engine ends up blocked behind HTTP/2 flow control.
    call = stub.Generate(generate_request("probe", CountRequest(size=100_000), request_id="blocked-1"))
    await first_reply(call)
    await asyncio.sleep(0.2)
    call.cancel()
    probe = PROBES["blocked-1"]
    await asyncio.wait_for(probe.ended.wait(), 10)
    assert probe.killed_in_finally is True


async def test_deadline_kills_the_engine(stub: pbg.EngineServiceAsyncStub) -> None:
    out = await collect(stub, "probe", CountRequest(delay_s=0.01), CountResponse, request_id="late-1", timeout=0.3)
    assert out.code is grpc.StatusCode.DEADLINE_EXCEEDED
    probe = PROBES["late-1"]
    await asyncio.wait_for(probe.ended.wait(), 10)
    assert probe.killed_in_finally is True


async def test_session_in_band_stop_ends_with_stopped(channel: grpc.aio.Channel) -> None:
    call = await start_session(channel, "probe", CountRequest(delay_s=0.01), "sess-1")
    await call.write(pb.SessionRequest(control=pb.Control(action=pb.Control.ACTION_STOP_GENERATING)))
    replies = await rest(call)
    assert replies[-1].finish_reason == pb.FINISH_REASON_STOPPED
    assert PROBES["sess-1"].exit == "stopped"


async def test_session_in_band_kill_is_aborted(channel: grpc.aio.Channel) -> None:
    call = await start_session(channel, "probe", CountRequest(delay_s=0.01), "sess-2")
    await call.write(pb.SessionRequest(control=pb.Control(action=pb.Control.ACTION_KILL)))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rest(call)
    assert info.value.code() is grpc.StatusCode.ABORTED
    assert PROBES["sess-2"].killed_in_finally is True


async def test_session_cancel_kills_and_half_close_is_fine(channel: grpc.aio.Channel) -> None:
    stub = pbg.EngineServiceStub(channel)
    call = stub.Session()
    await call.write(pb.SessionRequest(start=generate_request("probe", CountRequest(delay_s=0.01), "sess-3")))
    await call.done_writing()  # no more control: the generation runs on
    await first_reply(call)
    await first_reply(call)
    call.cancel()
    await asyncio.wait_for(PROBES["sess-3"].ended.wait(), 10)
    assert PROBES["sess-3"].killed_in_finally is True


async def test_three_hundred_concurrent_streams(stub: pbg.EngineServiceAsyncStub) -> None:
    outs = await asyncio.gather(
        *(collect(stub, "count", CountRequest(count=20, delay_s=0.005), CountResponse) for _ in range(300))
    )
    assert all(o.code is grpc.StatusCode.OK and len(o.items) == 20 for o in outs)
    assert all(o.finish_reason == pb.FINISH_REASON_COMPLETED for o in outs)


async def test_descriptors_decode_responses_in_a_fresh_pool(stub: pbg.EngineServiceAsyncStub) -> None:
    listing = await stub.ListEngines(pb.ListEnginesRequest())
    info = {e.name: e for e in listing.engines}["count"]
    assert (info.request_type, info.response_type, info.error_type) == (
        "examples.v1.CountRequest",
        "examples.v1.CountResponse",
        "examples.v1.CountError",
    )
    assert {e.name for e in listing.engines} >= {"echo", "count", "shout", "reverse"}
    assert {e.name: e.unary for e in listing.engines}["reverse"] is True
    pool = descriptor_pool.DescriptorPool()
    for file in info.descriptors.file:
        pool.Add(file)
    request_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(info.request_type))
    response_cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(info.response_type))
    assert request_cls is not CountRequest
    # A class built at run time from descriptors: its fields are not known to the type checker.
    request = cast(Any, request_cls)(count=3, size=2)
    call = stub.Generate(
        pb.GenerateRequest(
            engine="count",
            request={"type_url": "type.googleapis.com/" + info.request_type, "value": request.SerializeToString()},
        )
    )
    items: list[Any] = [response_cls.FromString(a.value) async for reply in call for a in reply.items]
    assert [(i.index, i.payload) for i in items] == [(0, "xx"), (1, "xx"), (2, "xx")]


async def test_health_overall_and_per_engine(channel: grpc.aio.Channel) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)
    for service in ("", "echo", "count"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health.Check(health_pb2.HealthCheckRequest(service="nope"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_service_and_finds_the_example_types(channel: grpc.aio.Channel) -> None:
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(cast(Any, channel))

    async def ask(**request: Any) -> reflection_pb2.ServerReflectionResponse:
        call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]))
        async for reply in call:
            return cast(reflection_pb2.ServerReflectionResponse, reply)
        raise AssertionError("no reflection reply")

    services = await ask(list_services="")
    names = {s.name for s in services.list_services_response.service}
    assert "engine.v1.EngineService" in names and "grpc.health.v1.Health" in names
    found = await ask(file_containing_symbol="examples.v1.EchoRequest")
    assert found.file_descriptor_response.file_descriptor_proto
