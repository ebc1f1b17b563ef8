"""The servers under test as subprocesses, and CPU pinning.

A server is started with ``--port 0``; the harness reads the address from the ``... listening on HOST:PORT``
line it logs to stderr, and keeps draining stderr afterwards (a full pipe would block the server's logging,
and so the server). With two or more CPUs the servers run on the first and the harness (the client) on the
second, so that neither steals the other's core and the measured cost is the server's own.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = [
    "Pinning",
    "ServerFailed",
    "ServerProcess",
    "bare_command",
    "pinned",
    "plan_pinning",
    "project_command",
    "running",
]

READY = re.compile(r"listening on ([^\s,]+:\d+)")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

# Runs as `python -c _LAUNCH CPUS COMMAND...` and then becomes the server. Pinning before exec means every
# thread grpc starts in the server inherits it (pinning a running process from outside reaches its main
# thread only). PR_SET_PDEATHSIG (1) survives the exec: should the harness die without its `finally`
# running (SIGKILL, SIGTERM), its servers get SIGTERM instead of running on as orphans.
_LAUNCH = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
if sys.argv[1]:
    os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")})
os.execv(sys.argv[2], sys.argv[2:])
"""


class ServerFailed(RuntimeError):
    """A server did not start: it exited, or logged no address in time. The message has its last lines."""


@dataclass
class Pinning:
    """Where the servers and the client run; ``applied`` is False (with a reason) where pinning is impossible."""

    applied: bool
    server_cpus: list[int] = field(default_factory=list)
    client_cpus: list[int] = field(default_factory=list)
    reason: str = ""


def plan_pinning(enabled: bool = True) -> Pinning:
    """Pin this process (the client) to the second CPU, and plan the servers onto the first."""
    if not enabled:
        return Pinning(False, reason="disabled with --no-pin")
    if not hasattr(os, "sched_setaffinity"):
        return Pinning(False, reason="os.sched_setaffinity is not available on this platform")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return Pinning(False, reason=f"only {len(cpus)} CPU available to this process")
    server, client = [cpus[0]], [cpus[1]]
    try:
        # Before any grpc object exists, so that grpc's threads in this process inherit it.
        os.sched_setaffinity(0, set(client))
    except OSError as error:
        return Pinning(False, reason=f"sched_setaffinity refused: {error}")
    return Pinning(True, server, client)


def project_command(targets: Sequence[str], loop: str, extra: Sequence[str] = ()) -> list[str]:
    """``engine-server`` as installed next to this interpreter, on a free port."""
    script = Path(sys.executable).parent / "engine-server"
    # Short drain and stop timeouts: a benchmark tears its server down with streams maybe still open.
    options = ["--port", "0", "--loop", loop, "--drain-timeout", "1", "--stop-timeout", "1"]
    return [str(script), *targets, *options, *extra]


def bare_command(loop: str) -> list[str]:
    """The bare grpc.aio server of :mod:`benchmarks.bare_server`, on a free port."""
    return [sys.executable, "-m", "benchmarks.bare_server", "--port", "0", "--loop", loop]


def pinned(command: list[str], cpus: Sequence[int] = ()) -> list[str]:
    """``command`` started on ``cpus`` (all its threads) and sent SIGTERM should the harness die (Linux)."""
    if sys.platform != "linux":
        return command
    return [sys.executable, "-c", _LAUNCH, ",".join(map(str, cpus)), *command]


class ServerProcess:
    """One running server: its process, the address it logged, and the tail of its stderr."""

    def __init__(
        self, name: str, command: list[str], cpus: Sequence[int] = (), env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.command = command
        command = pinned(command, cpus)
        self.tail: deque[str] = deque(maxlen=50)
        self._ready = threading.Event()
        self.address = ""
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,  # so that `benchmarks.engines:registry` and `-m benchmarks.bare_server` import
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, name=f"{name} stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.tail.append(line.rstrip())
            if not self._ready.is_set():
                found = READY.search(line)
                if found:
                    self.address = found.group(1)
                    self._ready.set()
        self._ready.set()  # the process is gone: wake whoever waits, the address stays empty

    def wait_ready(self, timeout: float = START_TIMEOUT) -> str:
        """The address the server listens on, or :class:`ServerFailed` if it exits or stays silent."""
        if not self._ready.wait(timeout):
            raise ServerFailed(f"{self.name} logged no address within {timeout:.0f}s: {self.last_lines()}")
        if not self.address:
            code = self.proc.wait(STOP_TIMEOUT)
            raise ServerFailed(f"{self.name} exited with code {code}: {self.last_lines()}")
        return self.address

    def last_lines(self, n: int = 3) -> str:
        return " | ".join(list(self.tail)[-n:]) or "(no output)"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tree(self) -> list[psutil.Process]:
        """The server's process and every process it started (its workers, if any)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        """Resident memory of the server's process, in bytes."""
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server's process has used so far."""
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        """Terminate the server and its workers; kill whatever is still there after the timeout."""
        tree = self.tree()
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
        _, alive = psutil.wait_procs(tree[1:], timeout=STOP_TIMEOUT)
        for child in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self._reader.join(STOP_TIMEOUT)


@contextlib.contextmanager
def running(
    name: str, command: list[str], cpus: Sequence[int] = (), env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Start a server (with ``env`` on top of this process's environment), wait for its address, and always stop
    it on the way out."""
    server = ServerProcess(name, command, cpus, env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
