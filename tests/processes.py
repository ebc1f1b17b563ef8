"""The installed console scripts as subprocesses, for the end-to-end tests (fixture `start_server`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.fleet import FollowsOutput, Output, wait_serving

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]


class ServerProcess(FollowsOutput):
    """An `engine-server` subprocess; `address` is read from its log line, never guessed."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.args = [str(BIN / "engine-server"), *args]
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        assert self.proc.stdout is not None
        self.followed = Output(self.proc.stdout, "engine-server output")

    def wait_listening(self, timeout: float = 30) -> str:
        """The address the server logged once it listens, after its health service answers SERVING there.

        The log line is the only place that names a port picked with ``--port 0``; readiness is health's word.
        """
        if not self.followed.listening.wait(timeout) or not self.address:
            raise AssertionError(f"engine-server did not start: {self.output}")
        wait_serving(self.address, timeout)
        return self.address

    def wait_for(self, pattern: str, timeout: float = 30, after: int = 0) -> re.Match[str]:
        """Wait for the first output line from index ``after`` on that matches ``pattern``."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = after
        with self.followed.new_line:
            while True:
                for line in self.lines[seen:]:
                    match = compiled.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.followed.ended:
                    raise AssertionError(f"no line matching {pattern!r} in: {self.output}")
                self.followed.new_line.wait(remaining)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        self.followed.reader.join(5)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.followed.reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def tracked_servers() -> Iterator[type[ServerProcess]]:
    """A ServerProcess class whose instances are all killed when the generator resumes (fixture teardown)."""
    started: list[ServerProcess] = []

    class Tracked(ServerProcess):
        def __init__(self, *args: str, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Tracked
    for server in started:
        server.close()
