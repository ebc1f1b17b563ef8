"""Resumable engines on the server: `resume_from` on the wire and the drain's hand-off (UNAVAILABLE with
`x-continue-elsewhere`), with its log line and metrics. The refusal for other engines is in test_status_codes.py."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest
from engine_runtime.server.logs import log_request
from engine_runtime.server.protocol import CONTINUE_ELSEWHERE_KEY
from tests.conftest import ServerFactory
from tests.helpers import Outcome, fetch_metrics, first_reply, generate_request, value

pytestmark = pytest.mark.asyncio


def resumed(
    engine: str, message: CountRequest | EchoRequest, resume_from: int, request_id: str = ""
) -> pb.GenerateRequest:
    request = generate_request(engine, message, request_id)
    request.resume_from = resume_from
    return request


async def run(stub: pbg.EngineServiceAsyncStub, request: pb.GenerateRequest) -> Outcome:
    out = Outcome()
    try:
        async for reply in stub.Generate(request, timeout=30):
            out.items.extend(CountResponse.FromString(item.value) for item in reply.items)
            out.finish_reason = reply.finish_reason
    except grpc.aio.AioRpcError as error:
        out.code, out.details, out.trailing = error.code(), error.details() or "", error.trailing_metadata()
    return out


def add_reply(out: Outcome, reply: pb.GenerateResponse) -> None:
    out.items.extend(CountResponse.FromString(item.value) for item in reply.items)
    out.finish_reason = reply.finish_reason


async def read_rest(call: grpc.aio.Call, out: Outcome) -> None:
    """Read ``call`` (with read()) to its end into ``out``: items, finish reason, and status with its trailers."""
    try:
        while (reply := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
            add_reply(out, reply)
    except grpc.aio.AioRpcError as error:
        out.code, out.details, out.trailing = error.code(), error.details() or "", error.trailing_metadata()


async def test_list_engines_says_which_engines_are_resumable(stub: pbg.EngineServiceAsyncStub) -> None:
    reply = await stub.ListEngines(pb.ListEnginesRequest())
    resumable = {info.name for info in reply.engines if info.resumable}
    assert {"count", "ticks"} <= resumable and not {"echo", "probe", "shout"} & resumable


async def test_a_resumable_engine_continues_after_the_items_the_client_has(stub: pbg.EngineServiceAsyncStub) -> None:
    out = await run(stub, resumed("count", CountRequest(count=10), 7))
    assert [item.index for item in out.items] == [7, 8, 9]
    assert (out.code, out.finish_reason) == (grpc.StatusCode.OK, pb.FINISH_REASON_COMPLETED)
    past_the_end = await run(stub, resumed("count", CountRequest(count=10), 10))
    assert (past_the_end.items, past_the_end.finish_reason) == ([], pb.FINISH_REASON_COMPLETED)


async def test_the_drain_hands_resumable_streams_off_at_the_drain_timeout(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await make_server(drain_timeout=0.2, stop_timeout=5, metrics_port=0)
    server.service.on_finished(log_request)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        resumable = stub.Generate(resumed("count", CountRequest(count=100_000, delay_s=0.01), 5, "moves-1"))
        other = stub.Generate(generate_request("probe", CountRequest(count=0, delay_s=0.01), "stays-1"))
        moved, stopped = Outcome(), Outcome()
        add_reply(moved, await first_reply(resumable))
        add_reply(stopped, await first_reply(other))
        drain = asyncio.ensure_future(server.drain())
        await asyncio.gather(read_rest(resumable, moved), read_rest(other, stopped))
        await drain
    # The resumable stream ends UNAVAILABLE, telling where the client stands: the 5 it resumed from, then its own.
    assert moved.code is grpc.StatusCode.UNAVAILABLE and "another replica" in moved.details
    assert moved.finish_reason == pb.FINISH_REASON_UNSPECIFIED
    assert dict(moved.trailing)[CONTINUE_ELSEWHERE_KEY] == str(5 + len(moved.items))
    # The other one is asked to stop, as before, and ends STOPPED.
    assert (stopped.code, stopped.finish_reason) == (grpc.StatusCode.OK, pb.FINISH_REASON_STOPPED)
    lines = {r.request_id: r for r in caplog.records if r.name == "engine_runtime.requests"}  # type: ignore[attr-defined]
    line = lines["moves-1"]
    assert (line.finish, line.cause, line.status, line.resume_from) == ("migrated", "drain", "UNAVAILABLE", 5)  # type: ignore[attr-defined]
    assert server.metrics_url is not None
    samples = await asyncio.to_thread(fetch_metrics, server.metrics_url)
    assert value(samples, "engine_handoffs_total", engine="count") == 1
    assert value(samples, "engine_kills_total", engine="count", cause="drain") == 0
    assert value(samples, "engine_requests_total", engine="count", code="UNAVAILABLE") == 1


async def test_a_resumable_stream_asked_to_stop_is_left_to_finish_and_handed_off_at_the_stop_timeout(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await make_server(drain_timeout=0.1, stop_timeout=0.3)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        session = pbg.EngineServiceStub(channel).Session()
        await session.write(pb.SessionRequest(start=generate_request("ticks", CountRequest(delay_s=0.01))))
        out = Outcome()
        add_reply(out, await first_reply(session))
        # The client asked to stop: the drain does not hand it off at its drain timeout (it is finishing)...
        await session.write(pb.SessionRequest(control=pb.Control(action=pb.Control.ACTION_STOP_GENERATING)))
        drain = asyncio.ensure_future(server.drain())
        await read_rest(session, out)
        await drain
    # ... but `ticks` ignores stops, so at the stop timeout it is handed off rather than killed.
    assert out.code is grpc.StatusCode.UNAVAILABLE and "another replica" in out.details
    assert dict(out.trailing)[CONTINUE_ELSEWHERE_KEY] == str(len(out.items))
    assert [item.index for item in out.items] == list(range(len(out.items)))
    # It was still running at the stop timeout: not handed off at the drain timeout.
    assert any("killing 1 generation that ignored the stop" in r.getMessage() for r in caplog.records)
