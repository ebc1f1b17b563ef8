"""Engine tasks that outlived their kill: counted, logged, and cancelled again now and then.

A kill cancels an engine's task. An engine that swallows the ``CancelledError`` (or blocks in its ``finally``)
keeps its task alive: after the kill timeout its stream gives up on it, so the call ends with its status and its
slot is freed, and the task is handed here. Each one is logged with its engine and request id, counted
(``engine_zombie_tasks``), and cancelled again every kill timeout until it ends; nothing else can be done for a
coroutine that refuses to stop (see docs/operations.md).

Example::

    ZOMBIES.on_change(lambda engine, delta: gauge.labels(engine).inc(delta))
    len(ZOMBIES)       # zombie tasks alive now, in this process
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

__all__ = ["ZOMBIES", "Zombies"]

log = logging.getLogger("engine_runtime")

Listener = Callable[[str, int], None]


class Zombies:
    """The zombie engine tasks of this process, by task: ``(engine, request id)``."""

    def __init__(self) -> None:
        self._tasks: dict[asyncio.Task[None], tuple[str, str]] = {}
        self._listeners: list[Listener] = []
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._tasks)

    def on_change(self, listener: Listener) -> None:
        """Call ``listener(engine, +1 or -1)`` when a zombie appears or finally ends (for a gauge)."""
        self._listeners.append(listener)

    def add(self, task: asyncio.Task[None], engine: str, request_id: str, interval: float) -> None:
        """Take ``task`` in: it ignored its kill for ``interval`` seconds; cancel it again every ``interval``."""
        if task.done() or task in self._tasks:
            return
        self._tasks[task] = (engine, request_id)
        log.warning(
            "engine %r ignored a kill for %.1fs (request %s): its call has ended, its task runs on as a zombie",
            engine,
            interval,
            request_id,
            extra={"engine": engine, "request_id": request_id},
        )
        task.add_done_callback(self._ended)
        self._changed(engine, 1)
        if self._timer is None:
            self._timer = task.get_loop().call_later(interval, self._cancel_again, interval)

    def _cancel_again(self, interval: float) -> None:
        self._timer = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            self._timer = asyncio.get_running_loop().call_later(interval, self._cancel_again, interval)

    def _ended(self, task: asyncio.Task[None]) -> None:
        engine, request_id = self._tasks.pop(task)
        log.info(
            "zombie task of engine %r ended (request %s)",
            engine,
            request_id,
            extra={"engine": engine, "request_id": request_id},
        )
        self._changed(engine, -1)
        if not self._tasks and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _changed(self, engine: str, delta: int) -> None:
        for listener in self._listeners:
            listener(engine, delta)


ZOMBIES = Zombies()
"""This process's zombie engine tasks."""
