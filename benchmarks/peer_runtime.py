"""The origin's runtime (``ai-dynamo-runtime``) as a third server in the same run, or the reason it is not.

It lives in a virtual environment of its own, ``benchmarks/.peer-venv`` (``make peer-venv``; never part of the
project's install), or wherever ``BENCH_PEER_PYTHON`` points. Two processes run from it: its server
(:mod:`benchmarks.peer.server`, pinned with the other servers) and its client (:mod:`benchmarks.peer.client`,
pinned with the harness), which takes one JSON command a line and times the figure in its own process. They
find each other through file discovery in a fresh temporary directory and talk over the runtime's TCP request
plane on 127.0.0.1: no etcd, no NATS.

Where the environment is missing or the server does not start, every figure records the peer as skipped with
the reason, and the run goes on: the peer is never a failure of ``make bench``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import STOP_TIMEOUT, ServerFailed, ServerProcess, pinned, running

__all__ = ["Agent", "Peer", "PeerFailed", "peer_python", "running_peer", "sigkill_when_held"]

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "benchmarks" / ".peer-venv"
PYTHON_VARIABLE = "BENCH_PEER_PYTHON"
READY_TIMEOUT = 60.0  # its first start loads a large native library from a cold disk cache


class PeerFailed(RuntimeError):
    """The peer failed during a figure: the harness runs the figure again without it, never failing the run."""


def peer_python() -> tuple[Path | None, str]:
    """The peer environment's interpreter, or None and why not (with the command that makes it)."""
    configured = os.environ.get(PYTHON_VARIABLE)
    python = Path(configured) if configured else VENV / "bin" / "python"
    if not python.exists():
        where = f"{PYTHON_VARIABLE}={configured}" if configured else "benchmarks/.peer-venv"
        return None, f"the origin's runtime is not installed ({where} does not exist): run `make peer-venv`"
    return python, ""


def peer_env(discovery: Path) -> dict[str, str]:
    """File discovery in ``discovery`` and the TCP request plane on loopback only; warnings-only logs."""
    return {
        "DYN_FILE_KV": str(discovery),
        "DYN_TCP_RPC_HOST": "127.0.0.1",
        "DYN_TCP_RESPONSE_STREAM_HOST": "127.0.0.1",
        # Warnings only. Its per-request lines (target `request_span`) stay on whatever the level (the runtime
        # adds `request_span=trace` to any filter), as the project logs one line per request at info.
        "DYN_LOG": "warn",
        "NO_COLOR": "1",
    }


async def _spawn(
    command: list[str], env: dict[str, str], cpus: Sequence[int], stdin: int, stderr: int
) -> asyncio.subprocess.Process:
    """A client-side process on ``cpus``, from the repository root, its output on a pipe."""
    return await asyncio.create_subprocess_exec(
        *pinned(command, cpus),
        stdin=stdin,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
        cwd=ROOT,
        env={**os.environ, **env},
        limit=64 * 1024 * 1024,  # the agent's answer to a paced run is one long line
    )


class Agent:
    """The peer's client process: ``await agent.call("throughput", items=N)`` returns the command's result."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.tail: deque[str] = deque(maxlen=20)
        self._drain = asyncio.ensure_future(self._read_stderr())
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, python: Path, env: dict[str, str], cpus: Sequence[int]) -> Agent:
        command = [str(python), "-m", "benchmarks.peer.client", "agent"]
        proc = await _spawn(command, env, cpus, asyncio.subprocess.PIPE, asyncio.subprocess.PIPE)
        agent = cls(proc)
        try:
            await agent._answer(READY_TIMEOUT)
        except BaseException:
            await agent.close()
            raise
        return agent

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.tail.append(line.decode(errors="replace").rstrip())

    async def _answer(self, timeout: float) -> Any:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    code = await self.proc.wait()
                    raise PeerFailed(f"the peer's client exited with code {code}: {' | '.join(list(self.tail)[-3:])}")
                # Answers are the lines that are JSON objects; anything else on stdout (a library's print) is not.
                if line.startswith(b'{"ok"'):
                    break
        answer = json.loads(line)
        if not answer["ok"]:
            raise PeerFailed(f"the peer's client: {answer['error']}")
        return answer["result"]

    async def call(self, op: str, timeout: float = 120.0, **args: Any) -> Any:
        """Run one command in the peer's client and return its result; :class:`PeerFailed` with the peer's error."""
        assert self.proc.stdin is not None
        async with self._lock:
            try:
                self.proc.stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
                await self.proc.stdin.drain()
                return await self._answer(timeout)
            except (OSError, TimeoutError) as error:
                raise PeerFailed(f"the peer's client did not answer {op!r}: {type(error).__name__}: {error}") from error

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self._drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._drain


@dataclass
class Peer:
    """The peer's server and client, and what starting another of its clients takes."""

    python: Path
    version: str
    server: ServerProcess
    agent: Agent
    env: dict[str, str]

    def hold_command(self, streams: int, prefix: str, pace: float) -> list[str]:
        """A client process that holds ``streams`` paced probes open, for the disconnect figure."""
        return [str(self.python), "-m", "benchmarks.peer.client", "hold", str(streams), prefix, str(pace)]


def _version(python: Path) -> str:
    code = "import importlib.metadata as m; print(m.version('ai-dynamo-runtime'))"
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=False)
    if found.returncode != 0:
        raise ServerFailed(f"ai-dynamo-runtime is not installed in {python}: {found.stderr.strip()[-200:]}")
    return found.stdout.strip()


@contextlib.asynccontextmanager
async def running_peer(server_cpus: Sequence[int], client_cpus: Sequence[int]) -> AsyncIterator[Peer | str]:
    """The running peer (stopped on the way out), or the reason it is skipped."""
    python, reason = peer_python()
    if python is None:
        yield reason
        return
    with tempfile.TemporaryDirectory(prefix="bench-peer-kv-") as discovery:
        env = peer_env(Path(discovery))
        stack = contextlib.AsyncExitStack()
        try:
            version = _version(python)
            command = [str(python), "-m", "benchmarks.peer.server"]
            server = stack.enter_context(running("peer server", command, server_cpus, env))
            agent = await Agent.start(python, env, client_cpus)
            stack.push_async_callback(agent.close)
        except (ServerFailed, RuntimeError, OSError, TimeoutError, subprocess.SubprocessError) as error:
            await stack.aclose()
            yield f"the origin's runtime did not start: {type(error).__name__}: {error}"[:300]
            return
        async with stack:
            yield Peer(python, version, server, agent, env)


async def drop_when_held(command: list[str], env: dict[str, str], cpus: Sequence[int]) -> float:
    """Start a client process that prints ``held`` once its streams are open, have it shut down its connections
    (``drop`` on its stdin, :mod:`.drop`), then SIGKILL it; ``time.time()`` in the client just before the drop."""
    proc = await _spawn(command, env, cpus, asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
        if line.strip() != b"held":
            raise RuntimeError(f"the holding client exited before its streams were open (code {await proc.wait()})")
        proc.stdin.write(b"drop\n")
        await proc.stdin.drain()
        answer = (await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)).split()
        if len(answer) != 2 or answer[0] != b"dropped":
            raise RuntimeError(f"the holding client did not drop its connections: {b' '.join(answer)!r}")
        return float(answer[1])
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)


async def sigkill_when_held(command: list[str], env: dict[str, str], cpus: Sequence[int]) -> tuple[float, float]:
    """Start a client process that prints ``held`` once its streams are open, SIGKILL it; ``time.time()`` at the
    kill, and once the process was reaped (the kernel has closed its sockets by then)."""
    proc = await _spawn(command, env, cpus, asyncio.subprocess.DEVNULL, asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT)
        if line.strip() != b"held":
            raise RuntimeError(f"the holding client exited before its streams were open (code {await proc.wait()})")
        killed = time.time()
        proc.kill()
        await proc.wait()
        return killed, time.time()
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
