"""Request logs: one line per finished request, the request id on every line about a request, no secrets."""

from __future__ import annotations

import json
import logging

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server.app import EngineServer
from engine_runtime.server.logs import JsonFormatter, RefusalLog, TextFormatter, log_request
from tests.conftest import ServerFactory
from tests.helpers import collect, first_reply, generate_request, stop_request

pytestmark = pytest.mark.asyncio

TOKEN = "s3cret-token-that-must-not-leak"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture
def logged(make_server: ServerFactory, caplog: pytest.LogCaptureFixture) -> ServerFactory:
    """Start a server whose finished requests are logged, with INFO lines captured."""
    caplog.set_level(logging.INFO)

    async def start(**config: object) -> EngineServer:
        server = await make_server(**config)
        server.service.on_finished(log_request)
        return server

    return start


def both_formats(record: logging.LogRecord) -> tuple[dict[str, object], str]:
    return json.loads(JsonFormatter().format(record)), TextFormatter().format(record)


async def test_one_line_per_finished_stopped_and_killed_request(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await make_server(auth_token=TOKEN)
    server.service.on_finished(log_request)
    endless = CountRequest(count=0, delay_s=0.01)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        done = await collect(stub, "echo", EchoRequest(text="a b"), EchoResponse, request_id="done-1", metadata=AUTH)
        assert done.code is grpc.StatusCode.OK

        stopped = stub.Generate(generate_request("probe", endless, "stop-1"), metadata=AUTH)
        await stopped.read()
        await stub.Stop(await stop_request(stopped), metadata=AUTH)
        while await stopped.read() is not grpc.aio.EOF:
            pass

        killed = stub.Generate(generate_request("probe", endless, "kill-1"), metadata=AUTH)
        await killed.read()
        killed.cancel()
        assert await server.inflight.wait_empty(10)

    lines = {vars(r)["request_id"]: r for r in caplog.records if r.name == "engine_runtime.requests"}
    expected = {
        "done-1": ("echo", "OK", "completed", None),
        "stop-1": ("probe", "OK", "stopped", "stop_request"),
        "kill-1": ("probe", "CANCELLED", "killed", "client_cancel"),
    }
    assert set(lines) == set(expected)
    for request_id, (engine, status, finish, cause) in expected.items():
        entry, text = both_formats(lines[request_id])
        assert entry["request_id"] == request_id and entry["engine"] == engine
        assert (entry["status"], entry["finish"], entry["cause"]) == (status, finish, cause)
        assert isinstance(entry["items"], int) and isinstance(entry["duration_ms"], float)
        assert entry["level"] == "info" and entry["logger"] == "engine_runtime.requests"
        for field in (f"request_id={request_id}", f"engine={engine}", f"status={status}", f"finish={finish}"):
            assert field in text, (field, text)
        assert f"cause={cause}" in text and "items=" in text and "duration_ms=" in text
    assert json.loads(JsonFormatter().format(lines["done-1"]))["items"] == 2

    for record in caplog.records:
        for line in (JsonFormatter().format(record), TextFormatter().format(record)):
            assert TOKEN not in line


async def test_an_engine_failure_line_names_the_request(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await make_server()
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        out = await collect(pbg.EngineServiceStub(channel), "fails", EchoRequest(), EchoResponse, request_id="fail-1")
    assert out.code is grpc.StatusCode.INTERNAL
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    entry, text = both_formats(record)
    assert entry["request_id"] == "fail-1" and entry["engine"] == "fails"
    assert "RuntimeError" in str(entry["exception"])
    assert "request_id=fail-1" in text and "engine=fails" in text


async def test_a_kill_at_shutdown_is_logged_as_a_drain(logged: ServerFactory, caplog: pytest.LogCaptureFixture) -> None:
    server = await logged()
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        call = pbg.EngineServiceStub(channel).Generate(generate_request("probe", CountRequest(delay_s=0.01), "end-1"))
        await call.read()
        await server.kill()
    [record] = [r for r in caplog.records if r.name == "engine_runtime.requests"]
    entry, _ = both_formats(record)
    assert (entry["request_id"], entry["finish"], entry["cause"]) == ("end-1", "killed", "drain")


async def test_the_log_says_what_the_client_got_for_an_oversized_item_and_a_deadline(
    logged: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = await logged(max_message_bytes=2048)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        big = await collect(stub, "count", CountRequest(count=3, size=3000), CountResponse, request_id="big-1")
        assert big.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "over the message limit of 2048" in big.details
        late = await collect(stub, "probe", CountRequest(delay_s=0.01), CountResponse, request_id="late-1", timeout=0.3)
        assert late.code is grpc.StatusCode.DEADLINE_EXCEEDED
        assert await server.inflight.wait_empty(10)
    lines = {vars(r)["request_id"]: vars(r) for r in caplog.records if r.name == "engine_runtime.requests"}
    assert (lines["big-1"]["status"], lines["big-1"]["finish"]) == ("RESOURCE_EXHAUSTED", "failed")
    assert (lines["late-1"]["status"], lines["late-1"]["cause"]) == ("DEADLINE_EXCEEDED", "deadline")


async def test_each_refused_call_gets_one_line_within_a_rate(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    server = await make_server()
    server.service.on_refused(RefusalLog(per_second=5))
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        for _ in range(20):
            out = await collect(stub, "x" * 100_000, EchoRequest(), EchoResponse)
            assert out.code is grpc.StatusCode.NOT_FOUND
            assert len(out.details) < 600 and "(100000 characters)" in out.details
    refused = [vars(r) for r in caplog.records if r.name == "engine_runtime.requests"]
    assert 5 <= len(refused) < 20  # a flood is not logged line by line
    assert all(r["status"] == "NOT_FOUND" and r["finish"] == "refused" and r["engine"] is None for r in refused)


async def test_a_client_that_leaves_right_after_the_last_message_is_logged_as_complete(
    logged: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The race behind a stream whose client printed every item and `completed`, logged `killed ... items=0`:
    # the client had the final message and left while the handler was still inside its last write.
    server = await logged()
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        for n in range(30):
            call = stub.Generate(generate_request("echo", EchoRequest(text="a b c"), f"leaves-{n}"))
            while not (await first_reply(call)).finish_reason:
                pass
            call.cancel()
        assert await server.inflight.wait_empty(10)
    lines = [vars(r) for r in caplog.records if r.name == "engine_runtime.requests"]
    assert len(lines) == 30
    assert all((line["status"], line["finish"], line["items"]) == ("OK", "completed", 3) for line in lines), lines
