"""Every row of the status table in docs/protocol.md, over a real loopback channel; the server keeps serving."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import status_pb2

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import (
    CountError,
    CountRequest,
    CountResponse,
    EchoRequest,
    EchoResponse,
)
from tests.conftest import ServerFactory
from tests.engines import PROBES
from tests.helpers import collect, generate_request, rest, stop_request, wait_not_serving

pytestmark = pytest.mark.asyncio


async def still_serving(stub: pbg.EngineServiceAsyncStub) -> None:
    out = await collect(stub, "echo", EchoRequest(text="still here"), EchoResponse)
    assert out.code is grpc.StatusCode.OK and [i.text for i in out.items] == ["still", "here"]


async def raw_generate(channel: grpc.aio.Channel, data: bytes) -> grpc.aio.AioRpcError:
    call: Any = cast(Any, channel).unary_stream("/engine.v1.EngineService/Generate")(data)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    return info.value


async def test_generate_request_that_does_not_parse(
    channel: grpc.aio.Channel, stub: pbg.EngineServiceAsyncStub
) -> None:
    error = await raw_generate(channel, b"\xff\xff\xff")
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "GenerateRequest does not parse" in (error.details() or "")
    await still_serving(stub)


async def test_control_message_that_does_not_parse(channel: grpc.aio.Channel, stub: pbg.EngineServiceAsyncStub) -> None:
    call: Any = cast(Any, channel).stream_stream("/engine.v1.EngineService/Session")()
    start = pb.SessionRequest(start=generate_request("probe", CountRequest(delay_s=0.01)))
    await call.write(start.SerializeToString())
    await call.read()
    await call.write(b"\xff\xff\xff")
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        while await call.read() is not grpc.aio.EOF:
            pass
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "control message does not parse" in (info.value.details() or "")
    await still_serving(stub)


async def test_unknown_engine_names_it_and_the_engines_served(stub: pbg.EngineServiceAsyncStub) -> None:
    out = await collect(stub, "nope", EchoRequest(), EchoResponse)
    assert out.code is grpc.StatusCode.NOT_FOUND
    assert "'nope'" in out.details and "echo" in out.details and "count" in out.details
    await still_serving(stub)


async def test_request_of_another_type_names_expected_and_received(stub: pbg.EngineServiceAsyncStub) -> None:
    out = await collect(stub, "echo", CountRequest(count=1), EchoResponse)
    assert out.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "examples.v1.EchoRequest" in out.details and "examples.v1.CountRequest" in out.details
    await still_serving(stub)


async def test_request_inside_the_any_that_does_not_parse(stub: pbg.EngineServiceAsyncStub) -> None:
    bad = any_pb2.Any(type_url="type.googleapis.com/examples.v1.EchoRequest", value=b"\x0a\xff")
    call = stub.Generate(pb.GenerateRequest(engine="echo", request=bad))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "examples.v1.EchoRequest" in (info.value.details() or "")
    await still_serving(stub)


async def test_request_id_already_in_flight(stub: pbg.EngineServiceAsyncStub) -> None:
    first = stub.Generate(generate_request("probe", CountRequest(delay_s=0.01), request_id="dup-1"))
    await first.read()
    out = await collect(stub, "echo", EchoRequest(text="x"), EchoResponse, request_id="dup-1")
    assert out.code is grpc.StatusCode.ALREADY_EXISTS and "dup-1" in out.details
    first.cancel()
    await still_serving(stub)


@pytest.mark.parametrize(("request_id", "says"), [("a" * 129, "129"), ("bad\x01id", "printable"), ("é", "printable")])
async def test_malformed_request_id(stub: pbg.EngineServiceAsyncStub, request_id: str, says: str) -> None:
    out = await collect(stub, "echo", EchoRequest(text="x"), EchoResponse, request_id=request_id)
    assert out.code is grpc.StatusCode.INVALID_ARGUMENT and says in out.details
    await still_serving(stub)


async def test_server_concurrency_limit(make_server: ServerFactory) -> None:
    server = await make_server(max_concurrency=2)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        calls = [stub.Generate(generate_request("probe", CountRequest(delay_s=0.01))) for _ in range(2)]
        for call in calls:
            await call.read()
        out = await collect(stub, "echo", EchoRequest(text="x"), EchoResponse)
        assert out.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-concurrency" in out.details
        assert "2" in out.details
        for call in calls:
            call.cancel()
        await asyncio.wait_for(server.inflight.wait_empty(10), 5)
        await still_serving(stub)


async def test_engine_concurrency_limit(make_server: ServerFactory) -> None:
    server = await make_server(max_engine_concurrency=1)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        call = stub.Generate(generate_request("probe", CountRequest(delay_s=0.01)))
        await call.read()
        out = await collect(stub, "probe", CountRequest(count=1), CountResponse)
        assert out.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "'probe'" in out.details and "--max-engine-concurrency" in out.details
        await still_serving(stub)  # another engine is not limited by probe's count
        call.cancel()


async def test_message_over_the_size_limit(make_server: ServerFactory) -> None:
    server = await make_server(max_message_bytes=4096)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        out = await collect(stub, "echo", EchoRequest(text="x" * 10_000), EchoResponse)
        assert out.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        await still_serving(stub)


async def test_engine_error_keeps_its_code_and_its_typed_detail(stub: pbg.EngineServiceAsyncStub) -> None:
    out = await collect(stub, "typed_error", EchoRequest(text="cold"), EchoResponse)
    assert out.code is grpc.StatusCode.FAILED_PRECONDITION and out.details == "not ready: cold"
    raw = dict(out.trailing)["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    detail = CountError()
    assert status.details[0].Unpack(detail) and detail == CountError(field="text", value=7)
    await still_serving(stub)


@pytest.mark.parametrize("engine", ["fails", "wrong_type", "leaks_cancel"])
async def test_engine_failure_is_internal_naming_the_engine_without_a_traceback(
    stub: pbg.EngineServiceAsyncStub, engine: str
) -> None:
    out = await collect(stub, engine, EchoRequest(), EchoResponse)
    assert out.code is grpc.StatusCode.INTERNAL
    assert f"'{engine}'" in out.details and "request id" in out.details
    assert "Traceback" not in out.details and "secret" not in out.details
    await still_serving(stub)


async def test_a_wrong_response_type_names_both_types(stub: pbg.EngineServiceAsyncStub) -> None:
    out = await collect(stub, "wrong_type", EchoRequest(), EchoResponse)
    assert "examples.v1.CountResponse" in out.details and "examples.v1.EchoResponse" in out.details


async def test_resuming_an_engine_that_is_not_resumable_is_failed_precondition(
    stub: pbg.EngineServiceAsyncStub,
) -> None:
    request = generate_request("echo", EchoRequest(text="a b c"))
    request.resume_from = 2
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Generate(request):
            pass
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "engine 'echo' is not resumable: it cannot continue after 2 items" in (info.value.details() or "")
    await still_serving(stub)


async def test_draining_refuses_new_calls_with_unavailable(make_server: ServerFactory) -> None:
    server = await make_server(drain_timeout=5, stop_timeout=1)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        running = stub.Generate(generate_request("probe", CountRequest(count=30, delay_s=0.02)))
        await running.read()
        drain = asyncio.ensure_future(server.drain())
        await wait_not_serving(channel)
        out = await collect(stub, "echo", EchoRequest(text="late"), EchoResponse)
        assert out.code is grpc.StatusCode.UNAVAILABLE
        reasons = [reply.finish_reason for reply in await rest(running)]
        assert reasons[-1] == pb.FINISH_REASON_COMPLETED  # the accepted stream finished
        await drain


async def test_streams_running_past_the_stop_timeout_get_unavailable(make_server: ServerFactory) -> None:
    server = await make_server(drain_timeout=0.1, stop_timeout=0.2)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        call = stub.Generate(generate_request("stubborn", EchoRequest()))
        await call.read()
        drain = asyncio.ensure_future(server.drain())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await rest(call)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        await drain


@pytest.mark.parametrize("key", ["", "someone-elses-key"])
async def test_a_stop_without_the_generations_key_is_not_found_like_an_unknown_id(
    stub: pbg.EngineServiceAsyncStub, key: str
) -> None:
    call = stub.Generate(generate_request("probe", CountRequest(delay_s=0.01), request_id="keyed"))
    await call.read()
    right = await stop_request(call, kill=True)
    assert right.stop_key and right.stop_key != key
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await stub.Stop(pb.StopRequest(request_id="keyed", stop_key=key, kill=True))
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.Stop(pb.StopRequest(request_id="not-running", stop_key=key, kill=True))
    assert wrong.value.code() is unknown.value.code() is grpc.StatusCode.NOT_FOUND
    assert wrong.value.details() == (unknown.value.details() or "").replace("not-running", "keyed")
    await call.read()  # untouched: it still streams
    await stub.Stop(right)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rest(call)
    assert info.value.code() is grpc.StatusCode.ABORTED


async def test_stop_with_kill_is_aborted_naming_the_request_id(stub: pbg.EngineServiceAsyncStub) -> None:
    call = stub.Generate(generate_request("probe", CountRequest(delay_s=0.01), request_id="to-kill"))
    await call.read()
    await stub.Stop(await stop_request(call, kill=True))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await rest(call)
    assert info.value.code() is grpc.StatusCode.ABORTED and "to-kill" in (info.value.details() or "")
    assert PROBES["to-kill"].killed_in_finally is True
    await still_serving(stub)


async def test_an_engine_that_kills_itself_is_aborted(stub: pbg.EngineServiceAsyncStub) -> None:
    out = await collect(stub, "suicide", EchoRequest(), EchoResponse, request_id="self-kill")
    assert out.code is grpc.StatusCode.ABORTED and "self-kill" in out.details
    await still_serving(stub)


async def test_missing_or_wrong_token_is_unauthenticated_and_health_stays_open(make_server: ServerFactory) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    server = await make_server(auth_token="s3cret-token")
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        metadata: Any
        for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", "s3cret-token"),)):
            out = await collect(stub, "echo", EchoRequest(text="x"), EchoResponse, metadata=metadata)
            assert out.code is grpc.StatusCode.UNAUTHENTICATED
            assert "s3cret" not in out.details
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListEngines(pb.ListEnginesRequest())
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer s3cret-token"),)
        out = await collect(stub, "echo", EchoRequest(text="x"), EchoResponse, metadata=good)
        assert out.code is grpc.StatusCode.OK
        health: Any = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_stop_of_an_unknown_request_is_not_found(stub: pbg.EngineServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Stop(pb.StopRequest(request_id="nothing-here"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND and "nothing-here" in (info.value.details() or "")


async def test_stop_request_that_does_not_parse(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cast(Any, channel).unary_unary("/engine.v1.EngineService/Stop")(b"\xff\xff")
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_list_engines_of_an_unknown_name_is_not_found(stub: pbg.EngineServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListEngines(pb.ListEnginesRequest(name="nope"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND and "echo" in (info.value.details() or "")


async def test_session_that_does_not_start_with_start(channel: grpc.aio.Channel) -> None:
    call: Any = cast(Any, channel).stream_stream("/engine.v1.EngineService/Session")()
    control = pb.SessionRequest(control=pb.Control(action=pb.Control.ACTION_KILL))
    await call.write(control.SerializeToString())
    await call.done_writing()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "start" in (info.value.details() or "")
