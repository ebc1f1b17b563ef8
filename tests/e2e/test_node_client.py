"""End to end: the Node.js example client (examples/node) against the installed ``engine-server``.

The client has only engine.proto: it learns the engines' types from ListEngines. One run of it against one
real server (``--port 0``) is shared by the tests below, each checking one promise of the wire contract as a
non-Python client sees it. The server is then stopped with SIGTERM, as in production, and must exit 0.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine_runtime.server.examples import MAX_COUNT
from tests.processes import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
NODE_EXAMPLE = ROOT / "examples" / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")

NPM_CI_TIMEOUT = 300.0
STARTUP_TIMEOUT = 30.0
CLIENT_TIMEOUT = 90.0
SHUTDOWN_TIMEOUT = 30.0
TEXT = "hello from node over grpc"


pytestmark = [
    pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are needed on PATH for the Node.js client"),
    # The first test pays for `npm ci` when node_modules is missing, then for the whole shared run.
    pytest.mark.timeout(NPM_CI_TIMEOUT + STARTUP_TIMEOUT + CLIENT_TIMEOUT + SHUTDOWN_TIMEOUT),
]


@dataclass
class Run:
    """What one run of ``node client.js`` printed, and how the server behaved around it."""

    client: subprocess.CompletedProcess[str]
    events: list[dict[str, Any]]
    server_exit: int
    server_log: str
    server_records: list[dict[str, Any]]

    def report(self) -> str:
        """Everything a failing assertion should show."""
        return (
            f"client exit status {self.client.returncode}\n--- client stdout\n{self.client.stdout}"
            f"--- client stderr\n{self.client.stderr}--- server exit status {self.server_exit}, stderr\n"
            f"{self.server_log}"
        )

    def step(self, step: str, event: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("step") == step and (event is None or e.get("event") == event)]

    def one(self, step: str, event: str | None = None) -> dict[str, Any]:
        found = self.step(step, event)
        assert len(found) == 1, f"expected one {step}/{event} line, got {len(found)}\n{self.report()}"
        return found[0]


def install_node_modules() -> None:
    """``npm ci`` from the committed lockfile, once: later runs reuse node_modules."""
    if (NODE_EXAMPLE / "node_modules").is_dir():
        return
    assert NPM is not None
    try:
        result = subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_EXAMPLE,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"npm ci took more than {NPM_CI_TIMEOUT}s in {NODE_EXAMPLE}") from error
    assert result.returncode == 0, f"npm ci failed in {NODE_EXAMPLE}:\n{result.stdout}\n{result.stderr}"


def parse_events(client: subprocess.CompletedProcess[str], server: ServerProcess) -> list[dict[str, Any]]:
    events = []
    for line in client.stdout.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(
                f"the client printed a line that is not JSON: {line!r}\n{client.stderr}\n{server.output}"
            ) from None
        events.append(event)
    return events


@pytest.fixture(scope="module")
def run() -> Run:
    assert NODE is not None
    install_node_modules()
    server = ServerProcess("--host", "127.0.0.1", "--port", "0", "--log-format", "json")
    try:
        address = server.wait_listening(STARTUP_TIMEOUT)
        try:
            client = subprocess.run(
                [NODE, "client.js", "--target", address, "--text", TEXT, "--timeout", "20"],
                cwd=NODE_EXAMPLE,
                capture_output=True,
                text=True,
                timeout=CLIENT_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise AssertionError(
                f"node client.js ran for more than {CLIENT_TIMEOUT}s; it printed:\n{error.stdout!r}\n"
                f"server stderr:\n{server.output}"
            ) from None
        events = parse_events(client, server)
        # The server stops before the tests look: its request log is complete once it has exited.
        server.signal(signal.SIGTERM)
        server_exit = server.wait(SHUTDOWN_TIMEOUT)
    finally:
        server.close()
    return Run(client, events, server_exit, server.output, server.records())


def test_client_exits_0_after_every_step(run: Run) -> None:
    assert run.client.returncode == 0, run.report()
    assert run.one("done") == {"step": "done", "ok": True}, run.report()


def test_types_come_from_list_engines(run: Run) -> None:
    engines = {e["name"]: e for e in run.one("engines")["engines"]}
    assert engines["echo"]["request_type"] == "examples.v1.EchoRequest", run.report()
    assert engines["echo"]["response_type"] == "examples.v1.EchoResponse", run.report()
    assert engines["count"]["error_type"] == "examples.v1.CountError", run.report()
    assert engines["reverse"]["unary"] is True, run.report()


def test_echo_streams_every_word_in_order_and_completes(run: Run) -> None:
    # Items may come coalesced, several to a message: only their order across messages is promised.
    items = [item for message in run.step("echo", "message") for item in message["items"]]
    assert [item["@type"] for item in items] == ["type.googleapis.com/examples.v1.EchoResponse"] * len(items)
    assert [item["text"] for item in items] == TEXT.split(), run.report()
    finished = run.one("echo", "finished")
    assert finished["words"] == TEXT.split(), run.report()
    assert finished["finish_reason"] == "FINISH_REASON_COMPLETED", run.report()
    assert finished["messages"] == len(run.step("echo", "message")), run.report()
    assert finished["request_id"], run.report()


def test_cancel_mid_stream_is_cancelled_for_the_client_and_a_kill_on_the_server(run: Run) -> None:
    finished = run.one("cancel", "finished")
    assert finished["code"] == "CANCELLED", run.report()
    assert finished["items_at_cancel"] >= 3, run.report()
    assert finished["finish_reason"] is None, run.report()
    requests = [r for r in run.server_records if r.get("request_id") == finished["request_id"] and "finish" in r]
    assert len(requests) == 1, run.report()
    assert requests[0]["finish"] == "killed", run.report()
    assert requests[0]["cause"] == "client_cancel", run.report()
    assert requests[0]["engine"] == "count", run.report()


def test_typed_error_detail_is_decoded_from_grpc_status_details_bin(run: Run) -> None:
    error = run.one("typed_error")
    assert error["code"] == "INVALID_ARGUMENT", run.report()
    assert "count" in error["message"], run.report()
    status = error["status"]
    assert status["code"] == 3, run.report()  # INVALID_ARGUMENT's number, in google.rpc.Status
    assert status["message"] == error["message"], run.report()
    [detail] = status["details"]
    assert detail["@type"] == "type.googleapis.com/examples.v1.CountError", run.report()
    assert detail["field"] == "count", run.report()
    # ProtoJSON writes 64-bit integers as strings.
    assert int(detail["value"]) == -1, run.report()
    assert int(detail["limit"]) == MAX_COUNT, run.report()


def test_server_exits_0_on_sigterm(run: Run) -> None:
    assert run.server_exit == 0, run.report()
