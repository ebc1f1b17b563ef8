"""`engine-client` as a user runs it, against a real `engine-server` subprocess: no local stubs involved."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid

import pytest

from tests.processes import BIN, ServerProcess


@pytest.fixture
def address(start_server: type[ServerProcess]) -> str:
    return start_server("tests.engines:registry", "--port", "0").wait_listening()


def client(address: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "engine-client"), "--target", address, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_list_is_a_readable_table(address: str) -> None:
    result = client(address, "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["NAME", "KIND", "REQUEST", "RESPONSE", "ERROR"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["count"][1:5] == [
        "stream",
        "examples.v1.CountRequest",
        "examples.v1.CountResponse",
        "examples.v1.CountError",
    ]
    assert rows["reverse"][1] == "unary"


def test_describe_shows_types_and_fields(address: str) -> None:
    result = client(address, "describe", "count")
    assert result.returncode == 0, result.stderr
    assert "request: examples.v1.CountRequest" in result.stdout
    assert "count = 1: int64" in result.stdout and "payload = 2: string" in result.stdout
    assert "error: examples.v1.CountError" in result.stdout


def test_generate_prints_json_lines_and_the_finish(address: str) -> None:
    result = client(address, "generate", "echo", '{"text": "hello streaming world"}')
    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"text": "hello"},
        {"text": "streaming"},
        {"text": "world"},
    ]
    assert "completed: 3 items" in result.stderr


def test_stop_after_asks_for_a_graceful_stop(address: str) -> None:
    result = client(address, "generate", "count", '{"count": 1000, "delay_s": 0.01}', "--stop-after", "3")
    assert result.returncode == 0, result.stderr
    indexes = [json.loads(line)["index"] for line in result.stdout.splitlines()]
    assert indexes[:3] == ["0", "1", "2"] and len(indexes) < 1000
    assert "stopped:" in result.stderr


def test_sigint_mid_stream_kills_the_generation_and_exits_130(address: str) -> None:
    proc = subprocess.Popen(
        [str(BIN / "engine-client"), "--target", address, "generate", "probe", '{"delay_s": 0.01}'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    request_id = ""
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline()) == {"index": "0", "payload": ""}
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted" in err
        request_id = err.split("generation ")[1].split()[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    report = client(address, "generate", "probe_report", json.dumps({"text": request_id}))
    assert json.loads(report.stdout.splitlines()[0])["text"] in ("cancelled killed=True", "generator-exit killed=True")


@pytest.mark.parametrize("kill", [False, True])
def test_stop_from_another_shell_needs_the_printed_key(address: str, kill: bool) -> None:
    proc = subprocess.Popen(
        [str(BIN / "engine-client"), "--target", address, "generate", "probe", '{"delay_s": 0.01}'],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        started = proc.stderr.readline()
        assert started.startswith("started: request id "), started
        request_id, key = started.split("request id ")[1].split(", served by ")[0].split(", stop key ")
        wrong = client(address, "stop", request_id, "--key", "guessed")
        assert wrong.returncode == 1 and "NOT_FOUND" in wrong.stderr
        right = client(address, "stop", request_id, "--key", key.strip(), *(["--kill"] if kill else []))
        assert right.returncode == 0, right.stderr
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if kill:
        assert proc.returncode == 1 and "ABORTED" in err
    else:
        assert proc.returncode == 0 and "stopped:" in err


def test_bad_json_names_the_field_and_the_type(address: str) -> None:
    result = client(address, "generate", "count", '{"cont": 1}')
    assert result.returncode != 0
    assert "examples.v1.CountRequest" in result.stderr and '"cont"' in result.stderr
    assert "Traceback" not in result.stderr
    result = client(address, "generate", "count", '{"count": "many"}')
    assert result.returncode != 0 and "count" in result.stderr and "examples.v1.CountRequest" in result.stderr
    result = client(address, "generate", "count", "{not json")
    assert result.returncode != 0 and "examples.v1.CountRequest" in result.stderr


def test_a_bad_field_is_named_as_describe_names_it(address: str) -> None:
    unknown = client(address, "generate", "echo", '{"nope": 1}')
    assert unknown.returncode == 1 and "'delay_s'" in unknown.stderr and "delayS" not in unknown.stderr
    bad_value = client(address, "generate", "echo", '{"delay_s": "soon"}')
    assert bad_value.returncode == 1 and "delay_s" in bad_value.stderr and "delayS" not in bad_value.stderr


def test_unknown_engine_lists_the_names_served(address: str) -> None:
    result = client(address, "generate", "nope", "{}")
    assert result.returncode == 1
    assert "NOT_FOUND" in result.stderr and "'nope'" in result.stderr and "echo" in result.stderr


def test_typed_error_shows_code_message_and_detail(address: str) -> None:
    result = client(address, "generate", "count", '{"count": -1}')
    assert result.returncode == 1
    assert "INVALID_ARGUMENT: count must be between" in result.stderr
    assert '"field": "count"' in result.stderr


def test_timeout_is_a_deadline(address: str) -> None:
    result = client(address, "--timeout", "0.3", "generate", "probe", '{"delay_s": 0.01}')
    assert result.returncode == 1 and "DEADLINE_EXCEEDED" in result.stderr


def test_options_work_after_the_subcommand_too(address: str) -> None:
    late = subprocess.run(
        [str(BIN / "engine-client"), "generate", "probe", '{"delay_s": 0.01}', "--target", address, "--timeout", "0.3"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert late.returncode == 1 and "DEADLINE_EXCEEDED" in late.stderr, late.stderr
    # Given on both sides, the one after the subcommand wins.
    both = client("127.0.0.1:1", "list", "--target", address)
    assert both.returncode == 0 and "echo" in both.stdout, both.stderr


def test_unreachable_target_is_a_clear_error() -> None:
    result = client("127.0.0.1:1", "--connect-timeout", "0.5", "list")
    assert result.returncode == 1 and "UNAVAILABLE" in result.stderr and "127.0.0.1:1" in result.stderr


def test_composition_example_calls_an_engine_on_another_server(start_server: type[ServerProcess]) -> None:
    upstream = start_server("--port", "0").wait_listening()
    relay = start_server("examples.relay:registry", "--port", "0", env={"ENGINE_UPSTREAM": upstream})
    result = client(relay.wait_listening(), "generate", "shout_remote", '{"text": "hello there"}')
    assert result.returncode == 0, result.stderr + relay.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["HELLO", "THERE"]


@pytest.mark.parametrize("target", ["", " , "])
def test_an_empty_target_is_one_clear_line(target: str) -> None:
    result = client(target, "list")
    assert result.returncode == 1 and "at least one target" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_stop_after_reports_the_items_that_came_after_the_stop(address: str) -> None:
    result = client(address, "generate", "count", '{"count": 2000}', "--stop-after", "2")
    assert result.returncode == 0, result.stderr
    arrived = len(result.stdout.splitlines())
    last = result.stderr.splitlines()[-1]
    assert arrived >= 2 and last.startswith(("stopped: ", "completed: "))
    if arrived > 2:  # a fast engine had produced more before it saw the stop
        assert f"{arrived} items, {arrived - 2} of them after the stop was asked" in last
    else:
        assert "2 items (request id" in last


def test_priority_orders_queued_calls(start_server: type[ServerProcess]) -> None:
    address = start_server("tests.engines:registry", "--port", "0", "--max-queue", "4").wait_listening()

    def generate(*args: str) -> tuple[subprocess.Popen[str], str, str]:
        """An engine-client generate of `single`, once it printed its id and key (it runs, or waits queued)."""
        command = [str(BIN / "engine-client"), "--target", address, "generate", "single", *args]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        started = proc.stderr.readline()
        assert started.startswith("started: request id "), started
        request_id, key = started.split("request id ")[1].split(", served by ")[0].split(", stop key ")
        return proc, request_id, key.strip()

    low, high = f"low-{uuid.uuid4().hex[:8]}", f"high-{uuid.uuid4().hex[:8]}"
    procs: list[subprocess.Popen[str]] = []
    try:
        holder, holder_id, holder_key = generate('{"delay_s": 0.01}')
        procs.append(holder)
        for request_id, priority in ((low, "0"), (high, "9")):
            procs.append(generate('{"count": 1}', "--request-id", request_id, "--priority", priority)[0])
        assert client(address, "stop", holder_id, "--key", holder_key).returncode == 0
        for proc in procs:
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    order = client(address, "generate", "probes_started", json.dumps({"text": f"{low} {high}"}))
    assert json.loads(order.stdout.splitlines()[0])["text"] == f"{high} {low}"
    bad = client(address, "generate", "single", "{}", "--priority", str(2**31))
    assert bad.returncode == 2 and "--priority" in bad.stderr
