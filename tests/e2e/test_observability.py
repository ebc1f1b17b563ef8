"""`engine-server` with --metrics-port and its request log, as an operator sees them (one process)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc

from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import EchoRequest, EchoResponse
from tests.helpers import collect, fetch_metrics, value
from tests.processes import ServerProcess

TOKEN = "t0ken-that-must-never-be-logged"


async def calls(address: str) -> tuple[grpc.StatusCode, grpc.StatusCode]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pbg.EngineServiceStub(channel)
        good = await collect(
            stub,
            "echo",
            EchoRequest(text="a b"),
            EchoResponse,
            request_id="ok-1",
            metadata=(("authorization", f"Bearer {TOKEN}"),),
        )
        bad = await collect(stub, "echo", EchoRequest(), EchoResponse, metadata=(("authorization", "Bearer guess"),))
    return good.code, bad.code


def test_metrics_and_the_request_line_from_the_command(start_server: type[ServerProcess], tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    server = start_server(
        "--port", "0", "--metrics-port", "0", "--auth-token-file", str(token_file), "--log-level", "debug"
    )
    address = server.wait_listening()
    metrics_url = server.wait_for(r"metrics at (http://\S+)").group(1)
    assert asyncio.run(calls(address)) == (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED)
    samples = fetch_metrics(metrics_url)
    assert value(samples, "engine_requests_total", engine="echo", code="OK") == 1
    assert value(samples, "engine_items_sent_total", engine="echo") == 2
    assert ("process_resident_memory_bytes", frozenset()) in samples

    line = server.wait_for(r"request ok-1 completed: OK .*").group(0)
    for field in ("engine=echo", "request_id=ok-1", "status=OK", "finish=completed", "items=2", "duration_ms="):
        assert field in line, line
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.output
    assert TOKEN not in server.output
