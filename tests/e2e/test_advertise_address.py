"""`--advertise-address` reaches the server from the line, the environment and the file, and is `x-served-by`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest
from engine_runtime.server.protocol import SERVED_BY_KEY
from tests.helpers import generate_request
from tests.processes import ServerProcess


async def served_by(address: str) -> str:
    async with grpc.aio.insecure_channel(address) as channel:
        call: Any = pbg.EngineServiceStub(channel).Generate(generate_request("count", CountRequest(count=1)))
        metadata = dict(await call.initial_metadata())
        async for _ in call:
            pass
        return str(metadata[SERVED_BY_KEY])


@pytest.mark.parametrize("source", ["line", "env", "file", "default"])
def test_the_advertised_address_is_what_streams_name(
    source: str, start_server: type[ServerProcess], tmp_path: Path
) -> None:
    args, env = ["--port", "0"], {}
    if source == "line":
        args += ["--advertise-address", "10.9.8.7:50051"]
    elif source == "env":
        env = {"ENGINE_SERVER_ADVERTISE_ADDRESS": "10.9.8.7:50051"}
    elif source == "file":
        (tmp_path / "s.toml").write_text('advertise-address = "10.9.8.7:50051"\n')
        args += ["--config", str(tmp_path / "s.toml")]
    address = start_server(*args, env=env).wait_listening()
    expected = address if source == "default" else "10.9.8.7:50051"
    assert asyncio.run(served_by(address)) == expected
