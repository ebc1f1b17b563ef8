"""Graceful drain on SIGTERM/SIGINT (docs/operations.md, *Shutting down*), on the real console script."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, EchoRequest
from tests.conftest import ServerFactory
from tests.helpers import generate_request
from tests.processes import ServerProcess


async def run_streams(address: str, engine: str, requests: list[Any], on_first: Any) -> list[tuple[str, int]]:
    """Start every stream, call on_first() once all have produced an item, and report how each ended."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pbg.EngineServiceStub(channel)
        calls = [stub.Generate(generate_request(engine, r)) for r in requests]
        for call in calls:
            assert await call.read() is not grpc.aio.EOF
        on_first()

        async def finish(call: Any) -> tuple[str, int]:
            last = 0
            try:
                while (reply := await call.read()) is not grpc.aio.EOF:
                    last = reply.finish_reason
            except grpc.aio.AioRpcError as error:
                return error.code().name, last
            return "OK", last

        return await asyncio.gather(*(finish(call) for call in calls))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_short_streams_complete_and_the_server_exits_0(start_server: type[ServerProcess], signum: int) -> None:
    server = start_server("--port", "0", "--drain-timeout", "10", "--stop-timeout", "5")
    address = server.wait_listening()
    requests = [CountRequest(count=10, delay_s=0.02) for _ in range(5)]
    results = asyncio.run(run_streams(address, "count", requests, lambda: server.signal(signum)))
    assert results == [("OK", pb.FINISH_REASON_COMPLETED)] * 5
    assert server.wait() == 0, server.output


def test_long_streams_are_stopped_within_the_timeouts_none_unavailable(start_server: type[ServerProcess]) -> None:
    server = start_server("tests.engines:registry", "--port", "0", "--drain-timeout", "0.5", "--stop-timeout", "5")
    address = server.wait_listening()
    requests = [CountRequest(delay_s=0.01) for _ in range(5)]  # endless unless stopped
    started = time.monotonic()
    results = asyncio.run(run_streams(address, "probe", requests, lambda: server.signal(signal.SIGTERM)))
    assert results == [("OK", pb.FINISH_REASON_STOPPED)] * 5
    assert server.wait() == 0, server.output
    assert time.monotonic() - started < 0.5 + 5 + 3


def test_streams_ignoring_stop_are_killed_after_the_stop_timeout(start_server: type[ServerProcess]) -> None:
    server = start_server("tests.engines:registry", "--port", "0", "--drain-timeout", "0.2", "--stop-timeout", "0.3")
    address = server.wait_listening()
    results = asyncio.run(run_streams(address, "stubborn", [EchoRequest()], lambda: server.signal(signal.SIGTERM)))
    assert results == [("UNAVAILABLE", 0)]
    assert server.wait() == 0, server.output


def test_a_second_signal_kills_at_once(start_server: type[ServerProcess]) -> None:
    server = start_server("tests.engines:registry", "--port", "0", "--drain-timeout", "60", "--stop-timeout", "60")
    address = server.wait_listening()

    def twice() -> None:
        server.signal(signal.SIGTERM)
        # Two signals sent back to back may merge into one pending signal: send the second once the first landed.
        server.wait_for("draining")
        server.signal(signal.SIGTERM)

    started = time.monotonic()
    results = asyncio.run(run_streams(address, "stubborn", [EchoRequest()], twice))
    assert results[0][0] in ("UNAVAILABLE", "CANCELLED")
    assert server.wait(20) == 1, server.output
    assert time.monotonic() - started < 15
    assert "killing every generation now" in server.output


@pytest.mark.asyncio
async def test_health_turns_not_serving_when_the_drain_starts(make_server: ServerFactory) -> None:
    server = await make_server(drain_timeout=5, stop_timeout=1)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="echo"))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        stub = pbg.EngineServiceStub(channel)
        running = stub.Generate(generate_request("count", CountRequest(count=20, delay_s=0.02)))
        await running.read()
        drain = asyncio.ensure_future(server.drain())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        last = 0
        while (reply := await running.read()) is not grpc.aio.EOF:
            last = reply.finish_reason  # type: ignore[attr-defined]
        assert last == pb.FINISH_REASON_COMPLETED
        await asyncio.wait_for(drain, 10)


def test_a_drain_exits_within_its_timeouts_even_when_engines_ignore_their_kill(
    start_server: type[ServerProcess],
) -> None:
    server = start_server(
        "tests.engines:registry", "--port", "0", "--drain-timeout", "0.3", "--stop-timeout", "0.3",
        "--kill-timeout", "0.3",
    )  # fmt: skip
    address = server.wait_listening()
    requests = [CountRequest(count=0) for _ in range(2)]  # count 0: swallows every cancellation, for ever
    results = asyncio.run(run_streams(address, "swallows_kill", requests, lambda: server.signal(signal.SIGTERM)))
    assert [code for code, _ in results] == ["UNAVAILABLE", "UNAVAILABLE"]
    assert server.wait(30) == 0, server.output
    assert "ignored a kill" in server.output and "exiting with 2 engine tasks" in server.output


def test_an_engine_raising_system_exit_leaves_the_process_serving(start_server: type[ServerProcess]) -> None:
    server = start_server("tests.engines:registry", "--port", "0")
    address = server.wait_listening()

    async def call_and_check() -> tuple[str, int]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pbg.EngineServiceStub(channel)
            try:
                async for _ in stub.Generate(generate_request("exits", EchoRequest(text="exit"))):
                    pass
            except grpc.aio.AioRpcError as error:
                code = error.code().name
            health: Any = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            return code, reply.status

    assert asyncio.run(call_and_check()) == ("INTERNAL", health_pb2.HealthCheckResponse.SERVING)
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.output


def test_the_first_signal_says_how_long_the_drain_may_take(start_server: type[ServerProcess]) -> None:
    server = start_server("--port", "0", "--drain-timeout", "3", "--stop-timeout", "1", "--kill-timeout", "1")
    server.wait_listening()
    server.signal(signal.SIGINT)
    server.wait_for(r"SIGINT: draining, for up to 5s \(a second signal kills at once\)")
    assert server.wait() == 0, server.output
