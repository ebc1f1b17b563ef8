"""A fleet of real ``engine-server`` processes, one per loopback "host", with fault injection.

Each replica listens on its own address (127.0.0.2, 127.0.0.3, ...) with ``--port 0``; its address is read
from the ``listening on`` line it logs, and it counts as up once ``grpc.health.v1`` answers SERVING there (no
sleeps). ``Fleet.target`` is one ``ipv4:`` target naming every live replica, as a client over the fleet dials.

Example::

    with fleet(3, args=["--max-concurrency", "4"]) as f:
        client = EngineClient(f.target)
        f.kill(0)          # SIGKILL: a dead host
        f.freeze(1)        # SIGSTOP: a frozen host (f.thaw(1) resumes it)
        f.drain(2)         # SIGTERM: scale-down
        f.add()            # scale-out: one more replica

Shared by the tests and ``benchmarks/``. Everything is bounded in time, and every process is killed on the way
out, whatever happened; a replica also gets SIGTERM should the process that started it die first.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["Fleet", "FleetError", "FollowsOutput", "Output", "Replica", "fleet", "wait_serving"]

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
LISTENING = re.compile(r"listening on (\S+?)[, ]")
ROOT = Path(__file__).resolve().parent.parent
# Becomes the server after PR_SET_PDEATHSIG (1): it survives the exec, so a replica whose parent dies without
# cleaning up (SIGKILL) gets SIGTERM instead of running on as an orphan.
_LAUNCH = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
os.execv(sys.argv[1], sys.argv[1:])
"""


class FleetError(RuntimeError):
    """A replica did not start or stop in time; the message has its last output lines."""


def wait_serving(address: str, timeout: float = START_TIMEOUT) -> None:
    """Wait until ``grpc.health.v1`` at ``address`` answers SERVING for the whole server."""
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout, wait_for_ready=True)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise FleetError(f"replica at {address} is {reply.status}, not SERVING")


class Output:
    """A server process's output, followed line by line by a thread of its own: every line, the address its
    ``listening on`` line names, and its JSON log records. Shared by :class:`Replica` and the tests' servers."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self.lines: list[str] = []
        self.address = ""
        self.new_line = threading.Condition()  # notified on every line, and once at the end
        self.listening = threading.Event()  # set at the listening line, or at the end without one
        self.ended = False
        self.reader = threading.Thread(target=self._read, args=(stream,), name=name, daemon=True)
        self.reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self.new_line:
                self.lines.append(line)
                self.new_line.notify_all()
            if not self.address and (match := LISTENING.search(line)):
                self.address = match.group(1)
                self.listening.set()
        self.listening.set()  # gone: wake whoever waits, the address stays empty
        with self.new_line:
            self.ended = True
            self.new_line.notify_all()

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records printed (``--log-format json``); other lines are skipped."""
        records = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records


class FollowsOutput:
    """A server process whose output is ``followed``: the address it listens on, its lines, its JSON records."""

    followed: Output

    @property
    def address(self) -> str:
        return self.followed.address

    @property
    def lines(self) -> list[str]:
        return self.followed.lines

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records it printed (run with ``--log-format json``); other lines are skipped."""
        return self.followed.records()


class Replica(FollowsOutput):
    """One ``engine-server`` process on its own loopback host; ``lines`` is everything it printed."""

    def __init__(self, index: int, host: str, command: Sequence[str], env: Mapping[str, str]) -> None:
        self.index = index
        self.host = host
        launch = [sys.executable, "-c", _LAUNCH, *command] if sys.platform == "linux" else list(command)
        self.proc = subprocess.Popen(
            launch,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env},
            cwd=ROOT,  # so that `benchmarks.engines` and `tests.engines` targets import
        )
        assert self.proc.stdout is not None
        self.followed = Output(self.proc.stdout, f"replica {index} output")

    def wait_for_record(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first JSON log record (``--log-format json``) that satisfies ``predicate``, within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.followed.new_line:
            while True:
                for record in self.records():
                    if predicate(record):
                        return record
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self.alive and not self.followed.reader.is_alive()):
                    raise FleetError(f"replica {self.index} logged no such record: {self.last_lines()}")
                self.followed.new_line.wait(min(remaining, 1.0))

    def wait_serving(self, timeout: float = START_TIMEOUT) -> str:
        """The replica's address once its health service answers SERVING; :class:`FleetError` otherwise."""
        deadline = time.monotonic() + timeout
        if not self.followed.listening.wait(timeout) or not self.address:
            raise FleetError(f"replica {self.index} did not start: {self.last_lines()}")
        wait_serving(self.address, max(0.1, deadline - time.monotonic()))
        return self.address

    def last_lines(self, n: int = 5) -> str:
        return " | ".join(line.rstrip() for line in self.lines[-n:]) or "(no output)"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to exit; its exit code (negative: the signal that ended it)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise FleetError(f"replica {self.index} still running after {timeout:.0f}s: {self.last_lines()}") from None
        self.followed.reader.join(STOP_TIMEOUT)
        return code

    def close(self) -> None:
        """Kill it if it runs (SIGKILL ends a frozen process too) and reap it."""
        if self.alive:
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        self.followed.reader.join(STOP_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Fleet:
    """N replicas, each ``engine-server TARGETS... --host 127.0.0.K --port 0 ARGS...``; see :func:`fleet`."""

    def __init__(
        self,
        targets: Sequence[str] = (),
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        replica_args: Mapping[int, Sequence[str]] | None = None,
        replica_env: Mapping[int, Mapping[str, str]] | None = None,
        same_port: bool = False,
    ) -> None:
        self.same_port = same_port
        self.targets = list(targets)
        self.args = list(args)
        self.env = dict(env or {})
        self.replica_args = dict(replica_args or {})
        self.replica_env = dict(replica_env or {})
        self.replicas: list[Replica] = []

    def add(self, args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Replica:
        """Start one more replica on the next loopback host and wait until it serves (scale-out)."""
        index = len(self.replicas)
        host = f"127.0.0.{index + 2}"
        script = Path(sys.executable).parent / "engine-server"
        extra = [*self.replica_args.get(index, ()), *args]
        # With same_port, every replica takes the first one's port on its own host (as pods behind one DNS name).
        port = str(self.port) if self.same_port and self.replicas else "0"
        command = [str(script), *self.targets, "--host", host, "--port", port, *self.args, *extra]
        environment = {**self.env, **self.replica_env.get(index, {}), **(env or {})}
        replica = Replica(index, host, command, environment)
        self.replicas.append(replica)
        replica.wait_serving()
        return replica

    def __getitem__(self, index: int) -> Replica:
        return self.replicas[index]

    def __len__(self) -> int:
        return len(self.replicas)

    @property
    def addresses(self) -> list[str]:
        """Every started replica's ``host:port``, in start order (dead ones included)."""
        return [r.address for r in self.replicas]

    @property
    def port(self) -> int:
        """The first replica's port (every replica's, with ``same_port``)."""
        return int(self.replicas[0].address.rpartition(":")[2])

    @property
    def live_hosts(self) -> list[str]:
        """The hosts of the replicas that run (what a DNS name of the fleet resolves to)."""
        return [r.host for r in self.replicas if r.alive]

    @property
    def target(self) -> str:
        """One client target over the replicas that run: ``ipv4:127.0.0.2:P1,127.0.0.3:P2,...``."""
        return "ipv4:" + ",".join(r.address for r in self.replicas if r.alive)

    def kill(self, index: int) -> None:
        """SIGKILL: the host dies with every stream on it."""
        self.replicas[index].signal(signal.SIGKILL)
        self.replicas[index].wait()

    def freeze(self, index: int) -> None:
        """SIGSTOP: the host stops answering, its connections stay open (only keepalive can tell)."""
        self.replicas[index].signal(signal.SIGSTOP)

    def thaw(self, index: int) -> None:
        """SIGCONT: a frozen host runs again."""
        self.replicas[index].signal(signal.SIGCONT)

    def drain(self, index: int) -> None:
        """SIGTERM: scale-down; the replica drains (``--drain-timeout``, ``--stop-timeout``) and exits."""
        self.replicas[index].signal(signal.SIGTERM)

    def close(self) -> None:
        """Kill every replica still there (frozen ones included) and reap them all."""
        for replica in self.replicas:
            replica.close()


@contextlib.contextmanager
def fleet(
    count: int,
    targets: Sequence[str] = (),
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    replica_args: Mapping[int, Sequence[str]] | None = None,
    replica_env: Mapping[int, Mapping[str, str]] | None = None,
    same_port: bool = False,
) -> Iterator[Fleet]:
    """``count`` serving replicas (``targets``, ``args`` and ``env`` for all; ``replica_args``/``replica_env``
    by index for some; ``same_port``: all on the first one's port), every one killed on the way out."""
    started = Fleet(targets, args, env, replica_args, replica_env, same_port)
    try:
        for _ in range(count):
            started.add()
        yield started
    finally:
        started.close()
