"""The worker side of ``engine-server --workers N``: one process's server, driven by the supervisor.

A worker builds its :class:`~.app.EngineServer` (every grpc object is created here, in the spawned
process), binds the shared port with ``SO_REUSEPORT``, and reports ``ready`` or its startup error over its pipe.
Then it takes ``drain`` and ``kill`` from the pipe (and SIGTERM, to recycle one worker by hand), drains on its own
if the pipe closes (the supervisor died), and ignores SIGINT, which only the supervisor acts on.
See :mod:`.workers` for the supervisor.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .app import EngineServer, ServerConfig, StartupError
from .logs import configure_logging, log_request
from .metrics import ServerMetrics
from .registry import EngineRegistry
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
    except TargetError as error:
        conn.send(("error", str(error)))
        sys.exit(1)
    sys.exit(_run_loop(_serve_worker(registry, spec, conn), spec.loop_name))


def _run_loop(main: Coroutine[Any, Any, int], loop_name: str) -> int:
    if loop_name != "asyncio" and importlib.util.find_spec("uvloop") is not None:
        import uvloop

        return int(uvloop.run(main))
    return asyncio.run(main)


async def _serve_worker(registry: EngineRegistry, spec: WorkerSpec, conn: Connection) -> int:
    server = EngineServer(registry, spec.config)
    server.service.on_finished(log_request)
    if spec.metrics:
        ServerMetrics(multiprocess=True).attach(server.service)
    try:
        await server.start()
    except StartupError as error:
        conn.send(("error", str(error)))
        return 1
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Future[None]] = set()
    killed = False
    sigterms = 0

    def act(how: str) -> None:
        nonlocal killed
        killed = killed or how == "kill"
        task = asyncio.ensure_future(server.kill() if how == "kill" else server.drain())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def on_message() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            log.warning("worker %d: the supervisor is gone; draining", spec.index)
            act("drain")
            return
        if message in ("drain", "kill"):
            act(message)

    def on_sigterm() -> None:
        nonlocal sigterms
        sigterms += 1
        act("drain" if sigterms == 1 else "kill")

    loop.add_reader(conn.fileno(), on_message)
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    log.info("worker %d (pid %d) serving %s", spec.index, os.getpid(), ", ".join(server.addresses))
    conn.send(("ready", server.addresses, registry.names()))
    await server.wait_closed()
    return 1 if killed else 0
