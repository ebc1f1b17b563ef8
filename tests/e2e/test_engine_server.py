"""`engine-server` as a user runs it: starts, serves, logs its address, drains on SIGTERM, refuses bad set-ups."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from tests.helpers import OWN_CONNECTION, collect, generate_request
from tests.processes import BIN, ServerProcess


async def echo_words(address: str, text: str = "a b") -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        out = await collect(pbg.EngineServiceStub(channel), "echo", EchoRequest(text=text), EchoResponse)
    assert out.code is grpc.StatusCode.OK, out.details
    return [item.text for item in out.items]


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "engine-server"), *args], check=False, capture_output=True, text=True, timeout=timeout
    )


def test_serves_the_examples_logs_the_real_port_and_drains_with_exit_0(start_server: type[ServerProcess]) -> None:
    server = start_server("--port", "0")
    address = server.wait_listening()
    assert not address.endswith(":0")
    assert asyncio.run(echo_words(address)) == ["a", "b"]
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.output
    assert "drained" in server.output


def test_sigterm_lets_an_accepted_stream_complete(start_server: type[ServerProcess]) -> None:
    server = start_server("--port", "0", "--drain-timeout", "10")
    address = server.wait_listening()

    async def scenario() -> list[int]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pbg.EngineServiceStub(channel)
            call = stub.Generate(generate_request("count", CountRequest(count=20, delay_s=0.02)))
            reasons: list[int] = []
            first = True
            async for reply in call:
                if first:
                    server.signal(signal.SIGTERM)
                    first = False
                reasons.append(reply.finish_reason)
            return reasons

    reasons = asyncio.run(scenario())
    assert reasons[-1] == pb.FINISH_REASON_COMPLETED
    assert server.wait() == 0, server.output


def test_a_target_module_in_the_current_directory(start_server: type[ServerProcess], tmp_path: Path) -> None:
    (tmp_path / "my_engines.py").write_text(
        textwrap.dedent(
            """
            from engine_runtime.server import EngineRegistry
            from engine_runtime.generated.examples.v1.examples_pb2 import EchoRequest, EchoResponse

            registry = EngineRegistry()

            @registry.engine("hello", request=EchoRequest, response=EchoResponse)
            async def hello(request, ctx):
                yield EchoResponse(text="hello " + request.text)
            """
        )
    )
    server = start_server("my_engines", "--port", "0", cwd=tmp_path)
    address = server.wait_listening()
    assert "hello" in server.output

    async def call() -> list[str]:
        async with grpc.aio.insecure_channel(address) as channel:
            out = await collect(pbg.EngineServiceStub(channel), "hello", EchoRequest(text="you"), EchoResponse)
        return [item.text for item in out.items]

    assert asyncio.run(call()) == ["hello you"]


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("no_such_module_xyz", "cannot import 'no_such_module_xyz'"),
        ("engine_runtime.server.examples:nothing", "has no attribute 'nothing'"),
        ("engine_runtime.server.examples:MAX_COUNT", "not an EngineRegistry"),
        ("a:b:c:", "must be `module:attribute`"),
    ],
)
def test_a_bad_target_is_one_clear_line_and_a_non_zero_exit(target: str, says: str) -> None:
    result = run_cli(target, "--port", "0")
    assert result.returncode != 0
    assert says in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_unreadable_config_is_a_clear_error(tmp_path: Path) -> None:
    missing = run_cli("--config", str(tmp_path / "nope.toml"))
    assert missing.returncode != 0 and "nope.toml" in missing.stderr and "Traceback" not in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("port = [unclosed\n")
    result = run_cli("--config", str(bad))
    assert result.returncode != 0 and "bad.toml" in result.stderr and "Traceback" not in result.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'\n")
    result = run_cli("--config", str(unknown))
    assert result.returncode != 0 and "colour" in result.stderr


def test_a_port_in_use_fails_loudly() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = run_cli("--port", str(port))
    assert result.returncode != 0
    assert f"127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_a_second_server_on_the_same_port_fails(start_server: type[ServerProcess]) -> None:
    first = start_server("--port", "0")
    port = first.wait_listening().rsplit(":", 1)[1]
    result = run_cli("--port", port)
    assert result.returncode != 0 and "in use" in result.stderr


def test_config_file_and_environment(start_server: type[ServerProcess], tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text('port = 0\nlog-format = "json"\nmax_concurrency = 3\n')
    server = start_server("--config", str(config), env={"ENGINE_SERVER_LOG_LEVEL": "debug"})
    address = server.wait_listening()
    assert '"level": "info"' in server.output  # json, from the file
    assert asyncio.run(echo_words(address)) == ["a", "b"]
    server.signal(signal.SIGTERM)
    assert server.wait() == 0


def test_unix_socket_only(start_server: type[ServerProcess], tmp_path: Path) -> None:
    path = tmp_path / "engine.sock"
    server = start_server("--uds", str(path), "--no-tcp")
    address = server.wait_listening()
    assert address == f"unix:{path}"
    assert path.stat().st_mode & 0o077 == 0  # owner only
    assert asyncio.run(echo_words(address)) == ["a", "b"]
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not path.exists()


CLIENT = """
import asyncio, sys, grpc
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest
from tests.helpers import generate_request

async def main():
    async with grpc.aio.insecure_channel(sys.argv[1]) as channel:
        call = pbg.EngineServiceStub(channel).Generate(
            generate_request("probe", CountRequest(delay_s=0.01), request_id=sys.argv[2]))
        await call.read()
        print("streaming", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def test_a_client_process_killed_with_sigkill_leaves_no_generation_running(
    start_server: type[ServerProcess],
) -> None:
    server = start_server("tests.engines:registry", "--port", "0")
    address = server.wait_listening()
    root = Path(__file__).resolve().parents[2]
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, address, "sigkilled-1"], stdout=subprocess.PIPE, text=True, cwd=root
    )
    try:
        assert client.stdout is not None and client.stdout.readline().strip() == "streaming"
        client.kill()
        client.wait(10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
        if client.stdout is not None:
            client.stdout.close()

    async def report() -> str:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pbg.EngineServiceStub(channel)
            for _ in range(100):
                out = await collect(stub, "probe_report", EchoRequest(text="sigkilled-1"), EchoResponse)
                text = out.items[0].text
                if not text.startswith("running"):
                    return str(text)
                await asyncio.sleep(0.05)
        return "still running"

    assert asyncio.run(report()) in ("cancelled killed=True", "generator-exit killed=True")


def test_probe_engine_is_served_with_its_types(start_server: type[ServerProcess]) -> None:
    server = start_server("tests.engines:registry", "--port", "0")
    address = server.wait_listening()

    async def listing() -> dict[str, str]:
        async with grpc.aio.insecure_channel(address) as channel:
            reply = await pbg.EngineServiceStub(channel).ListEngines(pb.ListEnginesRequest())
        return {e.name: e.response_type for e in reply.engines}

    assert asyncio.run(listing())["probe"] == CountResponse.DESCRIPTOR.full_name


def test_a_refused_call_gets_one_log_line_naming_its_status(start_server: type[ServerProcess]) -> None:
    server = start_server("--port", "0", "--log-format", "json")
    address = server.wait_listening()

    async def refused() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(address) as channel:
            out = await collect(pbg.EngineServiceStub(channel), "no-such-engine", EchoRequest(), EchoResponse)
        return out.code

    assert asyncio.run(refused()) is grpc.StatusCode.NOT_FOUND
    line = server.wait_for(r'"finish": "refused"')
    assert '"status": "NOT_FOUND"' in line.string and "no-such-engine" in line.string


def test_every_option_in_help_is_in_the_operations_table() -> None:
    shown = subprocess.run(
        [str(BIN / "engine-server"), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    table = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    options = set(re.findall(r"(--[a-z][a-z-]+)", shown)) - {"--help"}
    missing = sorted(option for option in options if f"`{option}" not in table)
    assert not missing, f"docs/operations.md has no row for {missing}"


async def queue_options_arrive(address: str) -> list[tuple[grpc.StatusCode, str]]:
    """With a limit of 1: one count runs, one waits in the queue, a third is refused; how the last two ended."""
    async with contextlib.AsyncExitStack() as stack:
        stubs = []
        for _ in range(3):  # one stream per connection in this test: a connection each
            channel = grpc.aio.insecure_channel(address, options=OWN_CONNECTION)
            stubs.append(pbg.EngineServiceStub(await stack.enter_async_context(channel)))
        running = stubs[0].Generate(generate_request("count", CountRequest(count=1000, delay_s=0.01)))
        await running.read()
        waiting = stubs[1].Generate(generate_request("count", CountRequest(count=1)))
        await waiting.initial_metadata()
        refused = await collect(stubs[2], "count", CountRequest(count=1), CountResponse)
        expired = await collect_call(waiting)
        running.cancel()
    return [(refused.code, "--max-queue" if "--max-queue" in refused.details else refused.details), expired]


async def collect_call(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as error:
        details = error.details() or ""
        return error.code(), "--queue-timeout 0.3s" if "--queue-timeout 0.3s" in details else details
    return grpc.StatusCode.OK, ""


def test_the_isolation_options_are_taken_from_the_line_the_environment_and_the_file(
    start_server: type[ServerProcess], tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text("max-connections = 50\nmax-output-bytes = 2000000\nworker-heartbeat-timeout = 5\nmax-queue = 1\n")
    server = start_server(
        "--config", str(config), "--port", "0", "--kill-timeout", "0.5", "--stop-timeout", "1", "--drain-timeout", "1",
        "--max-streams-per-connection", "1", "--engine-threads", "2", "--max-connection-idle", "100",
        "--max-engine-concurrency", "1",
        env={"ENGINE_SERVER_LOOP_STALL_WARNING": "0.2", "ENGINE_SERVER_QUEUE_TIMEOUT": "0.3"},
    )  # fmt: skip
    address = server.wait_listening()
    assert asyncio.run(queue_options_arrive(address)) == [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "--max-queue"),  # a queue of one (the file), full
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "--queue-timeout 0.3s"),  # the queued one expires (the environment)
    ]
    server.wait_for(r"waited \d+\.\d ms in the queue: queue_timeout engine=count")  # the line of a call that waited

    async def second_stream_waits() -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pbg.EngineServiceStub(channel)
            first = stub.Generate(generate_request("count", CountRequest(count=1000, delay_s=0.01)))
            await first.read()
            out = await collect(stub, "echo", EchoRequest(text="x"), EchoResponse, timeout=0.5)
            first.cancel()
            return out.code

    assert asyncio.run(second_stream_waits()) is grpc.StatusCode.DEADLINE_EXCEEDED  # one stream per connection
    server.signal(signal.SIGTERM)
    server.wait_for(r"draining, for up to 2.5s")  # drain 1 + stop 1 + kill 0.5
    assert server.wait() == 0, server.output
    bad = subprocess.run(
        [str(BIN / "engine-server"), "--kill-timeout", "0"], capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 2 and "--kill-timeout" in bad.stderr and "Traceback" not in bad.stderr
