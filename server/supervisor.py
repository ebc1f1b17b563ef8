"""The supervisor of ``engine-server --workers N``: one port served by N worker processes, and their life.

Each worker is a full :class:`~.app.EngineServer` in a process of its own (:mod:`.worker`), started with the
``spawn`` method (grpc's threads do not survive a ``fork``) and creating every grpc object itself. All of them bind
the same port with ``SO_REUSEPORT``, so the kernel spreads *connections* across them: every call on one channel
goes to the same worker, and a client balances across workers only by opening several connections.

The supervisor (the process the user started):

- checks the port is free (or picks one for ``--port 0``) before any worker starts (:mod:`.ports`), and logs
  the one ``engine-server listening on ...`` line once every worker serves;
- applies the runner's :class:`~.runner.SignalPolicy` to SIGTERM and SIGINT (the first drains every worker, a
  second kills); it exits 0 when every worker drained and exited 0, and 1 otherwise;
- replaces a worker that dies, or stops answering its heartbeats (:mod:`.heartbeat`), while the server runs,
  but drains the others and exits 1 if a worker dies before it ever served: it would only crash again;
- with ``--metrics-port``, serves the workers' merged metrics itself (:mod:`.worker_metrics`).

Over each worker's pipe: ``ready`` or a startup error, and ``pong``, come in; ``drain``, ``kill`` and ``ping`` go
out. Workers ignore SIGINT: a Ctrl-C reaches the whole process group, and only the supervisor acts on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import signal
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from .app import StartupError
from .heartbeat import Heartbeats
from .ports import bind_reuseport, free_port
from .runner import Action, SignalPolicy
from .worker import WorkerSpec, worker_main
from .worker_metrics import WorkerMetrics

__all__ = ["Supervisor"]

log = logging.getLogger("engine_runtime.server")

# How long past the drain and stop timeouts a worker may take to exit before it is killed outright.
EXIT_GRACE = 30.0


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection | None
    pid: int
    ready: bool = False
    error: str | None = None


class Supervisor:
    """Starts the workers, relays signals to them, replaces the ones that die; see the module's docstring."""

    def __init__(self, spec: WorkerSpec, count: int) -> None:
        self.spec = spec
        self.count = count
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._signals: list[int] = []
        self._policy = SignalPolicy(self._describe)
        self._stopping = False
        self._deadline: float | None = None
        self._failed = False
        self._fatal: str | None = None
        self._announced = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._metrics: WorkerMetrics | None = None
        self._placeholder: socket.socket | None = None
        self._beats = Heartbeats(spec.config.worker_heartbeat_timeout)

    def run(self) -> int:
        """Run until every worker has exited; return the process's exit code."""
        c = self.spec.config
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            port = free_port(c.host, c.port)
            # Held (bound, not listening) until the workers listen, so that nothing else takes the port meanwhile.
            self._placeholder = bind_reuseport(c.host, port)
            self.spec = dataclasses.replace(
                self.spec, config=dataclasses.replace(c, port=port, reuse_port=True, metrics_port=None, announce=False)
            )
            if c.metrics_port is not None:
                self._metrics = WorkerMetrics.start(c.host, c.metrics_port, self.processes)
            for index in range(self.count):
                self._spawn(index)
            while self._workers:
                self._step()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._cleanup()
        if self._fatal is not None:
            raise StartupError(self._fatal)
        log.info("all workers drained; bye" if not self._failed else "all workers have exited")
        return 1 if self._failed or self._policy.killed else 0

    # -- the loop ----------------------------------------------------------------------------------------------

    def _step(self) -> None:
        self._relay_signals()
        now = time.monotonic()
        timeout = self._beats.wait(now) if self._deadline is None else max(0.0, self._deadline - now)
        waitables: list[Any] = [self._wake_r]
        for worker in self._workers.values():
            waitables.append(worker.process.sentinel)
            if worker.conn is not None:
                waitables.append(worker.conn)
        ready = wait(waitables, timeout)
        if self._wake_r in ready:
            self._wake_r.recv(4096)
        for worker in list(self._workers.values()):
            if worker.conn is not None and worker.conn in ready:
                self._receive(worker)
        for worker in list(self._workers.values()):
            if worker.process.sentinel in ready:
                self._exited(worker)
        if not self._stopping:
            self._check_heartbeats(time.monotonic())
        if self._deadline is not None and time.monotonic() >= self._deadline:
            for worker in self._workers.values():
                log.error("worker %d (pid %d) did not exit in time; killing it", worker.index, worker.pid)
                worker.process.kill()
            self._deadline = None  # the sentinels now fire
            self._failed = True

    def _check_heartbeats(self, now: float) -> None:
        for index in self._beats.overdue(now):
            worker = self._workers[index]
            log.error(
                "worker %d (pid %d) has not answered a heartbeat for %.1fs; replacing it",
                index,
                worker.pid,
                self._beats.timeout,
            )
            self._beats.forget(index)
            worker.process.kill()  # SIGKILL ends a stopped process too; its sentinel then fires
        if self._beats.due(now):
            for worker in self._workers.values():
                if worker.ready:
                    self._send(worker, "ping")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only note it here: the loop acts on it, outside the signal handler.
        self._signals.append(signum)
        with contextlib.suppress(BlockingIOError):  # a wake-up is already pending
            self._wake_w.send(b"\0")

    def _relay_signals(self) -> None:
        while self._signals:
            self._stop(self._policy.on_signal(self._signals.pop(0)))

    def _describe(self, action: Action) -> str:
        if action == "drain":
            return f"draining {len(self._workers)} workers"
        return "killing every generation in every worker now"

    def _stop(self, how: Action) -> None:
        self._stopping = True
        c = self.spec.config
        if self._deadline is None:
            self._deadline = time.monotonic() + c.drain_timeout + c.stop_timeout + EXIT_GRACE
        for worker in self._workers.values():
            self._send(worker, how)

    # -- workers -----------------------------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=worker_main,
            args=(dataclasses.replace(self.spec, index=index), child_end),
            name=f"engine-server worker {index}",
        )
        # The worker inherits SIGINT blocked (and ignores it once it runs): only the supervisor acts on Ctrl-C.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child_end.close()
        assert process.pid is not None
        worker = self._workers[index] = _Worker(index, process, parent_end, process.pid)
        if self._stopping:
            self._send(worker, "drain")

    def _send(self, worker: _Worker, message: str) -> None:
        if worker.conn is None:
            return
        with contextlib.suppress(OSError):  # it is exiting; its sentinel will tell
            worker.conn.send(message)

    def _receive(self, worker: _Worker) -> None:
        assert worker.conn is not None
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            worker.conn.close()
            worker.conn = None
            return
        if message[0] == "error":
            worker.error = message[1]
        elif message[0] == "pong":
            self._beats.answered(worker.index, time.monotonic())
        elif message[0] == "ready":
            worker.ready = True
            self._beats.answered(worker.index, time.monotonic())
            addresses, engines = message[1], message[2]
            if (
                not self._announced
                and len(self._workers) == self.count
                and all(w.ready for w in self._workers.values())
            ):
                self._announce(addresses, engines)

    def _announce(self, addresses: list[str], engines: list[str]) -> None:
        self._announced = True
        if self._placeholder is not None:
            self._placeholder.close()
            self._placeholder = None
        pids = ", ".join(str(w.pid) for w in sorted(self._workers.values(), key=lambda w: w.index))
        log.info(
            "engine-server listening on %s (engines: %s; %d workers, pids %s)",
            ", ".join(addresses),
            ", ".join(engines),
            self.count,
            pids,
        )

    def _exited(self, worker: _Worker) -> None:
        worker.process.join()
        while worker.conn is not None and worker.conn.poll():
            self._receive(worker)
        if worker.conn is not None:
            worker.conn.close()
        del self._workers[worker.index]
        self._beats.forget(worker.index)
        if self._metrics is not None:
            self._metrics.process_died(worker.pid)
        code = worker.process.exitcode
        if self._stopping:
            if code != 0:
                self._failed = True
                if worker.ready:  # one that never served has nothing to add to the error already reported
                    log.warning("worker %d (pid %d) ended with %s", worker.index, worker.pid, _how_it_ended(code))
            return
        if not worker.ready:
            self._fatal = worker.error or f"worker {worker.index} ended with {_how_it_ended(code)} before it served"
            self._failed = True
            self._stop("drain")
            return
        # Exit code 0: it was drained on its own (someone sent it SIGTERM), which is a way to recycle a worker.
        log.log(
            logging.INFO if code == 0 else logging.ERROR,
            "worker %d (pid %d) ended with %s while serving; starting a new one",
            worker.index,
            worker.pid,
            _how_it_ended(code),
        )
        self._spawn(worker.index)

    def processes(self) -> dict[str, int | str]:
        """The processes whose ``process_*`` metrics are served, by their ``worker`` label."""
        found: dict[str, int | str] = {"supervisor": "self"}
        for worker in sorted(self._workers.values(), key=lambda w: w.index):
            found[str(worker.index)] = worker.pid
        return found

    def _cleanup(self) -> None:
        for worker in self._workers.values():
            worker.process.kill()
            worker.process.join()
        if self._placeholder is not None:
            self._placeholder.close()
        if self._metrics is not None:
            self._metrics.close()
        self._wake_r.close()
        self._wake_w.close()


def _how_it_ended(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
