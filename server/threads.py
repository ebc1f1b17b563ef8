"""Sync engines: a plain ``def`` generator or function, run in a worker thread, never on the event loop.

Blocking code (a C library, a sync client, ``time.sleep``) inside ``async def`` stalls every stream of the
server; written as a plain function it runs here instead, in a pool of ``--engine-threads`` threads, with the
same context: ``ctx.is_stopped()`` works from the thread, and a kill ends the generator at its next ``yield``
(``GeneratorExit`` there, so its ``finally`` runs with ``ctx.is_killed()`` true). What a kill cannot do is
interrupt the thread in the middle of a step: the call ends at once, and the step finishes in the background
before the generator is closed (docs/concepts.md).

Example::

    @registry.engine("rows", request=Query, response=Row)
    def rows(request: Query, ctx: Context) -> Iterator[Row]:
        for row in blocking_database_call(request):
            if ctx.is_stopped():
                return
            yield row
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .context import Context

__all__ = [
    "DEFAULT_ENGINE_THREADS",
    "busy_engine_threads",
    "configure_engine_threads",
    "threaded_function",
    "threaded_generator",
]

DEFAULT_ENGINE_THREADS = min(32, (os.cpu_count() or 1) + 4)

_DONE = object()


class _Pool:
    """The process's engine threads, made on first use, and how many engine steps run in them now."""

    size = DEFAULT_ENGINE_THREADS
    executor: ThreadPoolExecutor | None = None
    busy = 0
    lock = threading.Lock()


def busy_engine_threads() -> int:
    """How many engine threads are inside an engine's code now (a blocked one keeps the process from exiting)."""
    return _Pool.busy


def _counted(fn: Callable[..., Any], *args: Any) -> Any:
    with _Pool.lock:
        _Pool.busy += 1
    try:
        return fn(*args)
    finally:
        with _Pool.lock:
            _Pool.busy -= 1


def configure_engine_threads(count: int) -> None:
    """Size the pool that sync engines run in (``--engine-threads``); takes effect before its first use."""
    _Pool.size = count


def _executor() -> ThreadPoolExecutor:
    if _Pool.executor is None:
        _Pool.executor = ThreadPoolExecutor(max_workers=_Pool.size, thread_name_prefix="engine")
    return _Pool.executor


def threaded_generator(
    fn: Callable[[Any, Context], Generator[Any, None, None]],
) -> Callable[[Any, Context], AsyncIterator[Any]]:
    """An async generator that steps the sync generator ``fn(request, ctx)`` in the engine threads."""

    async def run(request: Any, ctx: Context) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        pool = _executor()
        generator = fn(request, ctx)
        # One step at a time: the close after a kill waits for the step that the kill could not interrupt.
        lock = threading.Lock()

        def step() -> Any:
            with lock:
                return _counted(next, generator, _DONE)

        def close() -> None:
            with lock:
                _counted(generator.close)

        try:
            while (item := await loop.run_in_executor(pool, step)) is not _DONE:
                yield item
        finally:
            # Not awaited: a kill ends the call now; the engine's `finally` runs at its next `yield`, in a thread.
            pool.submit(close)

    return run


def threaded_function(fn: Callable[[Any, Context], Any]) -> Callable[[Any, Context], AsyncIterator[Any]]:
    """A unary engine: the sync function ``fn(request, ctx)`` run once in the engine threads."""

    async def run(request: Any, ctx: Context) -> AsyncIterator[Any]:
        yield await asyncio.get_running_loop().run_in_executor(_executor(), _counted, fn, request, ctx)

    return run
