"""`engine-server --workers N`: one port, N processes, one metrics scrape, one drain, a supervisor that copes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import EchoRequest, EchoResponse
from tests.helpers import OWN_CONNECTION, collect, fetch_metrics, generate_request, value
from tests.processes import BIN, ServerProcess

TARGET = "tests.engines:registry"
WORDS = [f"w{i}" for i in range(20)]
# The kernel balances connections, not calls: each client needs a connection of its own (OWN_CONNECTION) to land
# on a worker of its own.


async def ask_pid(address: str) -> str:
    async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
        out = await collect(pbg.EngineServiceStub(channel), "pid", EchoRequest(), EchoResponse)
    assert out.code is grpc.StatusCode.OK, out.details
    return str(out.items[0].text)


async def spread(address: str, *, calls: int = 16, rounds: int = 20) -> tuple[set[str], int]:
    """Call from ``calls`` clients at once, round after round, until two processes have answered."""
    pids: set[str] = set()
    made = 0
    for _ in range(rounds):
        pids.update(await asyncio.gather(*(ask_pid(address) for _ in range(calls))))
        made += calls
        if len(pids) >= 2:
            break
    return pids, made


async def one_stream_per_worker(address: str, server: ServerProcess) -> list[tuple[list[str], int]]:
    """Start a stream on each of the two workers, SIGTERM the supervisor, and read both streams to their end."""
    kept: dict[str, tuple[grpc.aio.Channel, grpc.aio.UnaryStreamCall[pb.GenerateRequest, pb.GenerateResponse]]] = {}
    request = generate_request("pid", EchoRequest(text=" ".join(WORDS), delay_s=0.1))
    for _ in range(100):
        channel = grpc.aio.insecure_channel(address, options=OWN_CONNECTION)
        call = pbg.EngineServiceStub(channel).Generate(request)
        first = await call.read()
        assert isinstance(first, pb.GenerateResponse)
        pid = EchoResponse.FromString(first.items[0].value).text
        if pid in kept:
            call.cancel()
            await channel.close()
            continue
        kept[pid] = (channel, call)
        if len(kept) == 2:
            break
    assert len(kept) == 2, "the streams all reached one worker"
    server.signal(signal.SIGTERM)
    results = []
    for channel, call in kept.values():
        words: list[str] = []
        reason = 0
        while (reply := await call.read()) is not grpc.aio.EOF:
            assert isinstance(reply, pb.GenerateResponse)
            words.extend(EchoResponse.FromString(item.value).text for item in reply.items)
            reason = reply.finish_reason
        results.append((words, reason))
        await channel.close()
    return results


def test_two_workers_share_one_port_one_scrape_and_one_drain(start_server: type[ServerProcess], tmp_path: Path) -> None:
    server = start_server(
        TARGET,
        *("--port", "0", "--workers", "2", "--metrics-port", "0", "--log-format", "json", "--drain-timeout", "20"),
        env={"TMPDIR": str(tmp_path)},
    )
    address = server.wait_listening()
    assert not address.endswith(":0")
    metrics_url = server.wait_for(r"metrics at (http://[^\s\"]+)").group(1)

    pids, calls = asyncio.run(spread(address))
    assert len(pids) == 2, f"every one of {calls} connections reached the same worker"
    samples = fetch_metrics(metrics_url)
    assert value(samples, "engine_requests_total", engine="pid", code="OK") == calls
    assert value(samples, "engine_items_sent_total", engine="pid") == calls
    assert value(samples, "engine_requests_in_flight", engine="pid") == 0
    for worker in ("supervisor", "0", "1"):
        assert ("process_cpu_seconds_total", frozenset({("worker", worker)})) in samples, worker

    for words, reason in asyncio.run(one_stream_per_worker(address, server)):
        assert words == WORDS and reason == pb.FINISH_REASON_COMPLETED
    assert server.wait() == 0, server.output

    entries = [json.loads(line) for line in server.lines if line.startswith("{")]
    assert sum("listening on" in entry["message"] for entry in entries) == 1
    requests = [entry for entry in entries if entry["logger"] == "engine_runtime.requests"]
    assert {entry["worker"] for entry in requests} == {0, 1}
    # The unary calls and the two drained streams; streams that landed on a worker already taken were cancelled.
    assert sum(entry["finish"] == "completed" for entry in requests) == calls + 2
    assert "all workers drained" in server.output
    # The SIGTERM reached both workers while their streams ran.
    in_flight = {e["worker"]: int(e["message"].split()[1]) for e in entries if e["message"].startswith("draining: ")}
    assert in_flight.keys() == {0, 1} and min(in_flight.values()) >= 1, in_flight
    assert not list(tmp_path.iterdir()), "the metrics directory was left behind"


def test_a_worker_that_dies_is_replaced(start_server: type[ServerProcess]) -> None:
    server = start_server(TARGET, "--port", "0", "--workers", "2")
    address = server.wait_listening()
    pids, _ = asyncio.run(spread(address))
    victim = min(pids)
    mark = len(server.lines)
    os.kill(int(victim), signal.SIGKILL)
    server.wait_for(
        rf"worker \d \(pid {victim}\) ended with signal SIGKILL while serving; starting a new one", after=mark
    )
    server.wait_for(r"worker \d \(pid \d+\) serving", after=mark)
    after, _ = asyncio.run(spread(address))
    assert len(after) == 2 and victim not in after
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.output


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "engine-server"), *args], check=False, capture_output=True, text=True, timeout=60)


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--workers", "2", "--port", "{taken}"), "cannot listen on 127.0.0.1:{taken}: Address already in use"),
        (("--port", "0", "--metrics-port", "{taken}"), "cannot serve metrics on 127.0.0.1:{taken}"),
        (("--workers", "2", "--port", "0", "--metrics-port", "{taken}"), "cannot serve metrics on 127.0.0.1:{taken}"),
        (("--workers", "2", "--uds", "/tmp/engine-x.sock"), "several processes cannot share one unix socket"),
        (("no_such_module_xyz", "--workers", "2", "--port", "0"), "cannot import 'no_such_module_xyz'"),
    ],
)
def test_a_bad_set_up_is_one_line_and_a_non_zero_exit(args: tuple[str, ...], says: str, taken_port: int) -> None:
    result = run_cli(*(arg.format(taken=taken_port) for arg in args))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert says.format(taken=taken_port) in result.stderr and "Traceback" not in result.stderr


def test_a_worker_that_stops_answering_is_replaced(start_server: type[ServerProcess]) -> None:
    server = start_server(TARGET, "--port", "0", "--workers", "2", "--worker-heartbeat-timeout", "1")
    address = server.wait_listening()
    frozen = int(server.wait_for(r"pids (\d+), (\d+)").group(1))

    async def scenario() -> tuple[str, list[grpc.StatusCode]]:
        # A stream in flight on the worker about to freeze: it must end with a status, not hang.
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(100):
                channel = await stack.enter_async_context(grpc.aio.insecure_channel(address, options=OWN_CONNECTION))
                call = pbg.EngineServiceStub(channel).Generate(
                    generate_request("pid", EchoRequest(text=" ".join(WORDS * 50), delay_s=0.1)), timeout=60
                )
                first = await call.read()
                assert isinstance(first, pb.GenerateResponse)
                if EchoResponse.FromString(first.items[0].value).text == str(frozen):
                    break
                call.cancel()
            os.kill(frozen, signal.SIGSTOP)  # alive, holding its share of the port, and answering nothing
            try:
                await asyncio.to_thread(server.wait_for, rf"pid {frozen}\) has not answered a heartbeat", 30)
                await asyncio.to_thread(server.wait_for, r"starting a new one", 30)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(frozen, signal.SIGCONT)
            try:
                while await call.read() is not grpc.aio.EOF:
                    pass
                ended = "OK"
            except grpc.aio.AioRpcError as error:
                ended = error.code().name

        async def one() -> grpc.StatusCode:
            async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
                out = await collect(
                    pbg.EngineServiceStub(channel), "echo", EchoRequest(text="x"), EchoResponse, timeout=5
                )
            return out.code

        return ended, list(await asyncio.gather(*(one() for _ in range(10))))

    ended, new_calls = asyncio.run(scenario())
    assert ended == "UNAVAILABLE"
    assert new_calls == [grpc.StatusCode.OK] * 10
    server.signal(signal.SIGTERM)
    assert server.wait(60) == 0, server.output
