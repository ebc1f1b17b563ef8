"""Connection age (gRFC A9): the options reach grpc, and an aged connection's streams run to their end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server.app import ServerConfig
from engine_runtime.server.options import channel_options
from tests.conftest import ServerFactory
from tests.helpers import collect, first_reply, generate_request, rest
from tests.processes import ServerProcess


async def long_stream_then_echo(address: str) -> tuple[grpc.StatusCode, grpc.StatusCode]:
    """How a 3 s stream ends on a connection that ages, and how a new call after it does."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pbg.EngineServiceStub(channel)
        long = await collect(stub, "count", CountRequest(count=30, delay_s=0.1), CountResponse)
        echo = await collect(stub, "echo", EchoRequest(text="again"), EchoResponse)
        return long.code, echo.code


@pytest.mark.parametrize("source", ["line", "env", "file"])
def test_the_options_come_from_the_line_the_environment_and_the_file(
    source: str, start_server: type[ServerProcess], tmp_path: Path
) -> None:
    args, env = ["--port", "0"], {}
    if source == "line":
        args += ["--max-connection-age", "0.3", "--max-connection-age-grace", "0.3"]
    elif source == "env":
        env = {"ENGINE_SERVER_MAX_CONNECTION_AGE": "0.3", "ENGINE_SERVER_MAX_CONNECTION_AGE_GRACE": "0.3"}
    else:
        (tmp_path / "s.toml").write_text("max-connection-age = 0.3\nmax_connection_age_grace = 0.3\n")
        args += ["--config", str(tmp_path / "s.toml")]
    address = start_server(*args, env=env).wait_listening()
    # The age and then the grace cut the stream (UNAVAILABLE) long before its 3 s; a new call reconnects.
    assert asyncio.run(long_stream_then_echo(address)) == (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.OK)


def test_by_default_connections_do_not_age_and_an_aged_one_has_no_grace_limit() -> None:
    assert "grpc.max_connection_age_ms" not in dict(channel_options(ServerConfig()))
    aged = dict(channel_options(ServerConfig(max_connection_age=60)))
    assert aged["grpc.max_connection_age_ms"] == 60_000
    assert "grpc.max_connection_age_grace_ms" not in aged  # grpc's default: calls run to their end


@pytest.mark.asyncio
async def test_a_stream_outlives_its_connection_age_and_new_calls_reconnect(make_server: ServerFactory) -> None:
    server = await make_server(max_connection_age=0.3)
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        call: Any = stub.Generate(generate_request("count", CountRequest(count=15, delay_s=0.1)))
        await first_reply(call)
        state = channel.get_state()
        for _ in range(200):  # bounded: the GOAWAY comes after about 0.3 s
            if state is not grpc.ChannelConnectivity.READY:
                break
            await channel.wait_for_state_change(state)
            state = channel.get_state()
        assert state is not grpc.ChannelConnectivity.READY  # the connection was told to go away...
        replies = await rest(call)
        assert replies[-1].finish_reason == pb.FINISH_REASON_COMPLETED  # ...and its stream ran to its end
        assert await call.code() is grpc.StatusCode.OK
        out = await collect(stub, "echo", EchoRequest(text="again"), EchoResponse)
        assert out.code is grpc.StatusCode.OK
