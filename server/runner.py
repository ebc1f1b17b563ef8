"""Running one server process, alone or as a ``--workers`` worker: the event loop, the stop rule, the end.

:func:`run_server` builds the :class:`~.app.EngineServer` with the request log (and, in a worker, the
multiprocess metrics) wired once, runs it on the chosen event loop until it is drained or killed, and returns the
process's exit code: 0 after a clean drain, 1 after a kill. Start-up failures raise :class:`~.app.StartupError`.

The stop rule, :class:`SignalPolicy`: the first SIGTERM or SIGINT drains (refuse new calls, let streams finish
within the drain and stop timeouts), any later one kills every generation at once. The ``--workers`` supervisor
applies the same rule to its own signals. A worker also takes ``drain`` and ``kill`` from its supervisor through
a :class:`Control`. How the process ends, once the server is closed, is decided in :func:`_end` alone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Literal, Protocol

from . import tracing
from .app import EngineServer, ServerConfig, StartupError
from .logs import RefusalLog, flush_logs, log_dequeued, log_request
from .metrics import ServerMetrics
from .registry import EngineRegistry
from .threads import busy_engine_threads

__all__ = ["STOP_SIGNALS", "Action", "Control", "SignalPolicy", "event_loop", "run_server"]

log = logging.getLogger("engine_runtime.server")

Action = Literal["drain", "kill"]
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def event_loop(name: str) -> Callable[[Coroutine[Any, Any, int]], int]:
    """The function that runs a coroutine on the ``--loop`` named ``name``.

    ``auto`` is uvloop where it is installed and asyncio elsewhere, ``asyncio`` is asyncio, and ``uvloop`` is uvloop
    or a :class:`~.app.StartupError` when it is not installed.
    """
    if name != "asyncio":
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise StartupError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.run
    return asyncio.run


class SignalPolicy:
    """The stop rule for signals: the first one drains, every later one kills.

    ``describe`` words what an action does for the log line (``"draining"``, ``"killing every generation now"``);
    without it the decisions are not logged (a worker leaves that to its supervisor).
    """

    def __init__(self, describe: Callable[[Action], str] | None = None) -> None:
        self.describe = describe
        self.signals = 0

    def on_signal(self, signum: int) -> Action:
        """Count a signal and say what it asks for."""
        self.signals += 1
        action: Action = "drain" if self.signals == 1 else "kill"
        if self.describe is not None:
            name = signal.Signals(signum).name
            if action == "drain":
                log.info("%s: %s (a second signal kills at once)", name, self.describe(action))
            else:
                log.warning("%s again: %s", name, self.describe(action))
        return action

    @property
    def killed(self) -> bool:
        """Whether a signal asked for a kill."""
        return self.signals > 1


def _describer(config: ServerConfig) -> Callable[[Action], str]:
    """The single process's wording of what a signal does, with how long a drain may take."""
    longest = config.drain_timeout + config.stop_timeout + config.kill_timeout

    def describe(action: Action) -> str:
        return f"draining, for up to {longest:g}s" if action == "drain" else "killing every generation now"

    return describe


class Control(Protocol):
    """A source of drain and kill requests besides the signals: a worker's pipe to its supervisor."""

    def open(self, server: EngineServer, act: Callable[[Action], None]) -> None:
        """Start passing requests to ``act``; called once the server serves and the signals are handled."""

    def close(self) -> None:
        """Stop passing requests (the process is ending)."""


def run_server(
    registry: EngineRegistry,
    config: ServerConfig,
    *,
    loop_name: str = "auto",
    signals: Iterable[int] = STOP_SIGNALS,
    policy: SignalPolicy | None = None,
    control: Control | None = None,
    multiprocess_metrics: bool = False,
) -> int:
    """Serve ``registry`` until a drain or a kill ends it; return the exit code (0: drained, 1: killed).

    ``signals`` are handled by ``policy`` (by default the logged rule of a single process); ``control`` adds a
    worker's supervisor; ``multiprocess_metrics`` records the metrics for a supervisor to serve. Raises
    :class:`~.app.StartupError` (one line) when the loop or the server cannot start.
    """
    run = event_loop(loop_name)
    policy = policy if policy is not None else SignalPolicy(_describer(config))
    return run(_serve(registry, config, tuple(signals), policy, control, multiprocess_metrics))


async def _serve(
    registry: EngineRegistry,
    config: ServerConfig,
    signals: tuple[int, ...],
    policy: SignalPolicy,
    control: Control | None,
    multiprocess_metrics: bool,
) -> int:
    try:
        tracing.configure_from_environment()
    except tracing.TracingError as error:
        raise StartupError(str(error)) from None
    server = EngineServer(registry, config)
    server.service.on_finished(log_request)
    server.inflight.admission.on_left(log_dequeued)
    server.service.on_refused(RefusalLog())
    if multiprocess_metrics:
        ServerMetrics(multiprocess=True).attach(server.service)
    await server.start()
    stopper = _Stopper(server)

    def on_signal(signum: int) -> None:
        stopper.act(policy.on_signal(signum))

    loop = asyncio.get_running_loop()
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    if control is not None:
        control.open(server, stopper.act)
    await server.wait_closed()
    if tracing.SWITCH.on:
        await asyncio.to_thread(tracing.shutdown)  # the spans still buffered, before the process may exit
    return await _end(stopper, control)


class _Stopper:
    """Turns drain and kill requests into one drain task and one kill task of the server."""

    def __init__(self, server: EngineServer) -> None:
        self.server = server
        self.drain: asyncio.Task[None] | None = None
        self.kill: asyncio.Task[None] | None = None
        self.ending = False

    def act(self, action: Action) -> None:
        if self.ending:
            return  # the server is closed: nothing left to drain or kill
        if action == "kill" and self.kill is None:
            self.kill = asyncio.ensure_future(self.server.kill())
        elif action == "drain" and self.drain is None and self.kill is None:
            self.drain = asyncio.ensure_future(self.server.drain())


async def _end(stopper: _Stopper, control: Control | None) -> int:
    """The end of the process, in one place, once the server is closed (drained or killed); the exit code.

    A kill runs to its end (every generation killed, grpc's server stopped) and the drain it overtook is
    cancelled; after a clean drain the drain's task is awaited. Whatever else still runs on the loop is then
    cancelled and waited for here, while the loop and grpc are whole, rather than left to the loop's shutdown.
    """
    stopper.ending = True
    if control is not None:
        control.close()
    if stopper.kill is not None:
        await stopper.kill
        if stopper.drain is not None:
            stopper.drain.cancel()
    elif stopper.drain is not None:
        await stopper.drain
    code = 1 if stopper.kill is not None else 0
    left = await _cancel_the_rest(stopper.server.config.kill_timeout)
    if left or busy_engine_threads():
        # Engines that refuse to end (zombie tasks, threads stuck in engine code) would keep the process alive
        # for ever: the loop's shutdown waits for every task and the interpreter for every thread. The server is
        # closed and every call has its status, so the process ends now, after the log is written.
        log.warning("exiting with %d engine tasks and %d engine threads that did not end", left, busy_engine_threads())
        flush_logs()
        os._exit(code)
    return code


async def _cancel_the_rest(timeout: float) -> int:
    """Cancel every other task of the loop and wait for them, at most ``timeout`` seconds, reporting errors as
    ``asyncio.run`` would; return how many did not end."""
    current = asyncio.current_task()
    rest = [task for task in asyncio.all_tasks() if task is not current]
    for task in rest:
        task.cancel()
    if not rest:
        return 0
    _, pending = await asyncio.wait(rest, timeout=timeout)
    loop = asyncio.get_running_loop()
    for task in rest:
        if task in pending:
            continue
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {"message": "unhandled exception during shutdown", "exception": task.exception(), "task": task}
            )
    return len(pending)
