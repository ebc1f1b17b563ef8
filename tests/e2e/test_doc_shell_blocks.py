"""Every shell block of the README and docs/ is run by a test, or says here why it is not.

`WHERE` names, for each block (by its page and first line), the test that runs it, or the reason it cannot run
in the suite. A new block with no entry fails the first test. The blocks nobody else runs are run here, with
their commands as written, against `engine-server --port 0` (the documented address swapped for the real one).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.processes import BIN, ROOT, ServerProcess

DEFAULT = "127.0.0.1:50051"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

HERE = "tests/e2e/test_doc_shell_blocks.py"
PEER_VENV = (
    "not run: benchmarks take minutes and measure speed, which tests do not (the --quick line is run by "
    "tests/bench/test_bench_smoke.py), and the peer's environment is the origin's runtime, a 75 MB wheel the suite "
    "never installs; tests/bench/test_peer.py runs the peer where it is installed, and checks the reason it is "
    "skipped where not"
)
WHERE: dict[tuple[str, str], str] = {
    ("README.md", "make run"): "not run: `make run` serves the fixed port 50051 until Ctrl-C, and `make test` is "
    "the suite itself; what `make run` starts is the `engine-server` that every e2e test runs",
    ("README.md", ".venv/bin/engine-client list"): "tests/e2e/test_readme.py",
    ("README.md", "grpcurl -plaintext -d"): "tests/e2e/test_readme.py",
    ("docs/client.md", "engine-server --port 50051 &"): HERE,
    ("docs/client.md", "engine-client [--target T]"): HERE + " (the lines without placeholders; `stop` with a "
    "real id and key is run by tests/e2e/test_engine_client.py)",
    ("docs/deployment.md", "docker build"): "not run: no Docker daemon in the test environment; the Dockerfile "
    "is checked by hadolint and its commands against the real console scripts (tests/deploy/test_deploy.py)",
    ("docs/deployment.md", "python -m engine_runtime.server.healthcheck"): HERE + " (the TLS line's HOST:PORT "
    "is a placeholder; TLS is run by tests/deploy/test_healthcheck.py)",
    ("docs/operations.md", "OTEL_TRACES_EXPORTER=otlp"): "tests/e2e/test_tracing_otlp.py (its variables, "
    "pointed at a receiver built in the test)",
    ("docs/operations.md", "engine-server mypackage.engines"): "not run: `mypackage` stands for your package; "
    "--workers with --metrics-port is run by tests/e2e/test_workers.py",
    ("docs/performance.md", "make peer-venv"): PEER_VENV,
    ("docs/performance.md", "python3 -m venv benchmarks/.peer-venv"): PEER_VENV,
    ("docs/performance.md", "make venv peer-venv"): PEER_VENV,
    ("docs/polyglot.md", "make venv && .venv/bin/engine-server"): "tests/e2e/test_node_client.py (client.js "
    "against a real engine-server)",
    ("docs/polyglot.md", "# What the server offers."): "tests/e2e/test_polyglot.py",
    ("docs/polyglot.md", "buf curl"): "tests/e2e/test_polyglot.py",
    ("docs/protocol.md", "grpcurl -plaintext 127.0.0.1:50051 list"): HERE,
}


def shell_blocks() -> dict[tuple[str, str], str]:
    """Every ``sh`` block by (page, first line), with continuation lines joined."""
    found = {}
    for page in PAGES:
        for block in re.findall(r"```sh\n(.*?)```", page.read_text(), flags=re.S):
            body = block.replace("\\\n", " ")
            found[(str(page.relative_to(ROOT)), body.splitlines()[0])] = body
    return found


BLOCKS = shell_blocks()


def block(page: str, start: str) -> str:
    (body,) = [body for (p, first), body in BLOCKS.items() if p == page and first.startswith(start)]
    return body


def test_every_shell_block_is_run_or_says_why_not() -> None:
    unlisted = [key for key in BLOCKS if not any(key[0] == p and key[1].startswith(s) for p, s in WHERE)]
    assert not unlisted, f"shell blocks with no entry in WHERE: {unlisted}"
    for (page, start), where in WHERE.items():
        block(page, start)  # each entry names exactly one block
        test = where.split(" ", 1)[0]
        if not where.startswith("not run:"):
            assert (ROOT / test).exists(), where


def commands(body: str) -> list[str]:
    """The block's commands: lines, joined where a quoted argument goes on to the next line."""
    found: list[str] = []
    pending = ""
    for line in body.strip().splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            shlex.split(pending)
        except ValueError:
            continue  # an open quote
        found.append(pending)
        pending = ""
    return found


def run(line: str, address: str, *, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(line.split("  #", 1)[0].replace(DEFAULT, address))
    tool = BIN / Path(argv[0]).name
    argv[0] = str(tool if tool.exists() else argv[0])
    if argv[:3] == [str(BIN / "python"), "-m", "engine_runtime.server.healthcheck"] and "--target" not in argv:
        argv += ["--target", address]  # the documented default address is the real server's here
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=cwd)


def test_the_client_page_relay_serves_across_two_servers(start_server: type[ServerProcess]) -> None:
    first, second, client = block("docs/client.md", "engine-server --port 50051 &").strip().splitlines()
    upstream_args = shlex.split(first.rstrip("& "))[1:]
    upstream = start_server(*[a if a != "50051" else "0" for a in upstream_args]).wait_listening()
    env, command = second.rstrip("& ").split(" ", 1)
    relay_args = shlex.split(command)[1:]
    relay = start_server(*[a if a != "50052" else "0" for a in relay_args], env={env.split("=")[0]: upstream})
    done = run(client.replace("127.0.0.1:50052", relay.wait_listening()), "")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['{"text": "HELLO"}', '{"text": "THERE"}']


def test_the_engine_client_lines_run(start_server: type[ServerProcess]) -> None:
    address = start_server("--port", "0").wait_listening()
    lines = block("docs/client.md", "engine-client [--target T]").strip().splitlines()
    runnable = [line for line in lines if "[" not in line and not re.search(r"\b[A-Z_]{3,}\b", line)]
    assert len(runnable) == 4
    for line in runnable:
        argv = shlex.split(line)
        done = run(shlex.join([argv[0], "--target", address, *argv[1:]]), address)
        assert done.returncode == 0, (line, done.stderr)
        assert done.stdout.strip(), line


def test_the_healthcheck_lines_run(start_server: type[ServerProcess]) -> None:
    address = start_server("--port", "0").wait_listening()
    lines = block("docs/deployment.md", "python -m engine_runtime.server.healthcheck").strip().splitlines()
    runnable = [line for line in lines if "HOST:PORT" not in line]
    assert len(runnable) == 2
    for line in runnable:
        done = run(line.replace("python ", str(BIN / "python") + " ", 1), address)
        assert done.returncode == 0, (line, done.stdout, done.stderr)


@pytest.mark.parametrize("index", [0, 1])
def test_the_protocol_page_grpcurl_lines_run(start_server: type[ServerProcess], index: int) -> None:
    address = start_server("--port", "0").wait_listening()
    done = run(commands(block("docs/protocol.md", "grpcurl"))[index], address)
    assert done.returncode == 0, done.stderr
    expected = "engine.v1.EngineService" if index == 0 else '"finish_reason": "FINISH_REASON_COMPLETED"'
    assert expected in done.stdout, done.stdout
