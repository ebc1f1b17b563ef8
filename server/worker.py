"""One worker process of ``engine-server --workers N``: the runner's server, driven by its supervisor's pipe.

A worker builds its server with :func:`~.runner.run_server` (every grpc object is created here, in the spawned
process), binds the shared port with ``SO_REUSEPORT``, and reports ``("ready", addresses, engines)`` or
``("error", message)`` over its pipe. Then it takes ``drain`` and ``kill`` from the pipe and SIGTERM (to recycle
one worker by hand: the first drains, a second kills), drains on its own if the pipe closes (the supervisor
died), and ignores SIGINT, which only the supervisor acts on. The supervisor is :mod:`.supervisor`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

from .app import EngineServer, ServerConfig, StartupError
from .logs import configure_logging
from .runner import Action, SignalPolicy, run_server
from .targets import TargetError, load_targets

__all__ = ["WorkerSpec", "worker_main"]

log = logging.getLogger("engine_runtime.server")


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to build its server (pickled to it by ``spawn``)."""

    targets: tuple[str, ...]
    config: ServerConfig
    log_format: str
    log_level: str
    loop_name: str
    metrics: bool
    index: int = 0


class _WorkerField(logging.Filter):
    """Adds ``worker=<index>`` to every log line of a worker."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """The entry point of a worker process: serve until the supervisor (or a SIGTERM) drains it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    configure_logging(spec.log_format, spec.log_level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerField(spec.index))
    try:
        registry = load_targets(spec.targets)
        code = run_server(
            registry,
            spec.config,
            loop_name=spec.loop_name,
            signals=(signal.SIGTERM,),
            policy=SignalPolicy(),  # not logged: the supervisor logs the signals it relays
            control=_SupervisorPipe(conn, spec.index),
            multiprocess_metrics=spec.metrics,
        )
    except (TargetError, StartupError) as error:
        conn.send(("error", str(error)))
        sys.exit(1)
    sys.exit(code)


class _SupervisorPipe:
    """The worker's end of its pipe, as the runner's :class:`~.runner.Control`."""

    def __init__(self, conn: Connection, index: int) -> None:
        self.conn = conn
        self.index = index
        self._act: Callable[[Action], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, server: EngineServer, act: Callable[[Action], None]) -> None:
        self._act = act
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.conn.fileno(), self._on_message)
        log.info("worker %d (pid %d) serving %s", self.index, os.getpid(), ", ".join(server.addresses))
        self.conn.send(("ready", server.addresses, server.registry.names()))

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.conn.fileno())
            self._loop = None

    def _on_message(self) -> None:
        assert self._act is not None
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.close()
            log.warning("worker %d: the supervisor is gone; draining", self.index)
            self._act("drain")
            return
        if message == "ping":
            self.conn.send(("pong",))  # answered from the event loop: proof that this worker serves
        elif message in ("drain", "kill"):
            self._act(message)
