"""The pump: how a local engine runs behind a :class:`~.stream.ResponseStream`.

A local engine runs in a task of its own (the *pump*) that appends what the engine yields to a bounded buffer.
The consumer takes everything that is already there in one go, and a full buffer makes the engine wait, so a
slow consumer slows the engine and memory stays bounded.

The pump holds the buffer, never the stream: a consumer that drops its stream lets it be collected, and the
collection kills the generation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from .budget import FREE_BYTES, OutputBudget
from .buffer import Buffer, complete
from .context import Context
from .errors import Aborted, EngineError, EngineEscaped, EngineFailed
from .stream import FinishReason, ResponseStream
from .zombies import ZOMBIES

__all__ = ["DEFAULT_KILL_TIMEOUT", "DEFAULT_MAX_BATCH_BYTES", "DEFAULT_MAX_BATCH_ITEMS", "LocalStream", "engine_of"]

log = logging.getLogger("engine_runtime")

Resp = TypeVar("Resp")

DEFAULT_MAX_BATCH_ITEMS = 1024
DEFAULT_MAX_BATCH_BYTES = 256 * 1024
DEFAULT_KILL_TIMEOUT = 2.0
"""Seconds a killed engine has to end before its stream gives up on it (``--kill-timeout``)."""

# The event loop keeps only weak references to tasks: a pump whose stream was dropped must not vanish mid-way.
_RUNNING: dict[asyncio.Task[None], Buffer] = {}


def engine_of(task: asyncio.Task[Any] | None) -> tuple[str, str] | None:
    """``(engine, request id)`` when ``task`` runs a local engine, else None (for the loop-stall watchdog)."""
    buf = _RUNNING.get(task) if task is not None else None
    return (buf.engine, buf.ctx.id) if buf is not None else None


class _PumpControl:
    """Linked as a child of the generation's context, so that a kill cancels the engine's task."""

    __slots__ = ("buf",)

    def __init__(self, buf: Buffer) -> None:
        self.buf = buf

    def stop_generating(self) -> None:
        # The engine polls the context; a stop interrupts nothing.
        pass

    stop = stop_generating

    def kill(self) -> None:
        buf = self.buf
        task = buf.task
        if task is None or task.done():
            buf.wake()
            return
        # The engine killing its own context (from inside its task) is a kill "from the far side" for the
        # consumer: it gets Aborted rather than a quiet end.
        buf.killed_by_engine = buf.killed_by_engine or asyncio.current_task() is task
        if not task.cancelling():
            # The first kill starts the kill timeout: an engine still running then is given up on.
            task.get_loop().call_later(buf.kill_timeout, _overdue, buf)
        task.cancel()

    def is_stopped(self) -> bool:
        return self.buf.ctx.is_stopped()

    def is_killed(self) -> bool:
        return self.buf.ctx.is_killed()


async def _pump(
    source: AsyncIterator[Any],
    buf: Buffer,
    check: Callable[[Any], None] | None,
    encode: Callable[[Any], bytes] | None,
) -> None:
    try:
        await _feed(source, buf, check, encode)
    except BaseException as escaped:
        if isinstance(escaped, Exception | asyncio.CancelledError):
            raise
        raise EngineEscaped(f"{type(escaped).__name__}: {escaped}") from escaped
    # Completed: say so before the consumer (woken for the last items) runs, so that the last items and the
    # finish reason leave in one message.
    complete(buf)


async def _feed(
    source: AsyncIterator[Any],
    buf: Buffer,
    check: Callable[[Any], None] | None,
    encode: Callable[[Any], bytes] | None,
) -> None:
    max_items, max_bytes = buf.max_items, buf.max_bytes
    try:
        # One loop per case keeps the per-item path free of branches it does not need. `buf.items` is looked up
        # for every item: the consumer takes the whole list and leaves a fresh one.
        if encode is not None:
            # The encoder checks the type as it frames (see wire.item_encoder).
            async for item in source:
                data = encode(item)
                if len(data) > FREE_BYTES and buf.budget is not None and not buf.given_up:
                    # A large item waits for the server's output budget (slow readers hold it), engine and all.
                    await buf.budget.acquire(len(data))
                    buf.held += len(data)
                items = buf.items
                items.append(data)
                nbytes = buf.nbytes = buf.nbytes + len(data)
                if buf.waiter is not None:
                    buf.wake()
                if len(items) >= max_items or nbytes >= max_bytes:
                    buf.space = asyncio.get_running_loop().create_future()
                    await buf.space
        else:
            async for item in source:
                if check is not None:
                    check(item)
                items = buf.items
                items.append(item)
                if buf.waiter is not None:
                    buf.wake()
                if len(items) >= max_items:
                    buf.space = asyncio.get_running_loop().create_future()
                    await buf.space
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            # Runs the engine's `finally` at its `yield` (GeneratorExit) if it is suspended there.
            await aclose()


def _overdue(buf: Buffer) -> None:
    """The kill timeout has passed: an engine still running ignored its kill; its stream gives up on it."""
    task = buf.task
    if buf.finished or task is None or task.done():
        return
    buf.given_up = True
    ZOMBIES.add(task, buf.engine, buf.ctx.id, buf.kill_timeout)
    buf.wake()


class LocalStream(ResponseStream[Resp]):
    """A :class:`ResponseStream` fed by an engine running in this process."""

    def __init__(
        self,
        source: AsyncIterator[Any],
        context: Context,
        *,
        engine: str,
        check: Callable[[Any], None] | None = None,
        encode: Callable[[Any], bytes] | None = None,
        max_items: int = DEFAULT_MAX_BATCH_ITEMS,
        max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        kill_timeout: float = DEFAULT_KILL_TIMEOUT,
        budget: OutputBudget | None = None,
    ) -> None:
        super().__init__(context)
        self._engine = engine
        self._buf = buf = Buffer(context, engine, max_items, max_bytes, kill_timeout)
        self._finish: FinishReason | None = None
        self._taken = 0  # budget bytes of batches handed out and not yet released
        buf.budget = budget
        context.link_child(_PumpControl(buf))
        task = asyncio.get_running_loop().create_task(
            _pump(source, buf, check, encode), name=f"engine {engine} {context.id}"
        )
        buf.task = task
        _RUNNING[task] = buf
        task.add_done_callback(lambda done: _finish(buf, done, engine))
        if context.is_killed():
            # Linking the pump to an already killed context cancelled nothing: the task did not exist yet.
            task.cancel()

    async def next_batch(self) -> list[Resp]:
        buf = self._buf
        while True:
            if buf.ctx.is_killed():
                # Nothing more is delivered after a kill; wait until the engine's `finally` blocks have run.
                buf.items = []
                self.release_budget()
                if not buf.finished and not buf.given_up:
                    await self._wait()
                    continue
                if buf.killed_by_engine:
                    raise Aborted(f"generation {buf.ctx.id!r} was killed by engine {self._engine!r}")
                return []
            if buf.items:
                batch, buf.items, buf.nbytes = buf.items, [], 0
                self._taken, buf.held = self._taken + buf.held, 0
                space, buf.space = buf.space, None
                if space is not None and not space.done():
                    space.set_result(None)
                if buf.finished and buf.error is None:
                    self._finished()
                return batch
            if buf.finished:
                if buf.error is not None:
                    raise buf.error
                self._finished()
                return []
            await self._wait()

    async def _wait(self) -> None:
        buf = self._buf
        buf.waiter = asyncio.get_running_loop().create_future()
        await buf.waiter

    def release_taken(self) -> None:
        """Give back the output budget of the batches handed out so far (once they are written)."""
        taken, self._taken = self._taken, 0
        if taken and self._buf.budget is not None:
            self._buf.budget.release(taken)

    def release_budget(self) -> None:
        """Give back every byte of output budget this stream holds (its call is over, or nothing is delivered)."""
        buf = self._buf
        self._taken, buf.held = self._taken + buf.held, 0
        self.release_taken()

    def _finished(self) -> None:
        # The last item is handed out and the engine returned (it did not raise and was not killed).
        self._finish = FinishReason.STOPPED if self._buf.stopped else FinishReason.COMPLETED

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._finish

    async def aclose(self) -> None:
        buf = self._buf
        if not buf.finished:
            buf.ctx.kill()
        while not buf.finished and not buf.given_up:
            await self._wait()

    def __del__(self) -> None:
        # A consumer that drops its stream is gone: nothing runs on for it.
        buf = self._buf
        if not buf.finished and buf.task is not None and not buf.task.get_loop().is_closed():
            buf.ctx.kill()


def _finish(buf: Buffer, task: asyncio.Task[None], engine: str) -> None:
    """The pump's done callback: records how a generation that did not complete ended."""
    _RUNNING.pop(task, None)
    if buf.held and buf.budget is not None:
        buf.budget.release(buf.held)  # taken after its call was over: nobody else will give it back
        buf.held = 0
    if buf.finished:
        return
    ctx = buf.ctx
    error = None if task.cancelled() else task.exception()
    if isinstance(error, EngineError):
        buf.error = error
    elif error is not None or not ctx.is_killed():
        # Only a kill cancels the pump: a CancelledError without one leaked out of the engine.
        what = "failed" if error is not None else "raised CancelledError without a kill"
        extra = {"engine": engine, "request_id": ctx.id}
        log.error("engine %r %s (request %s)", engine, what, ctx.id, exc_info=error, extra=extra)
        buf.error = EngineFailed(
            f"engine {engine!r} failed" if error else f"engine {engine!r} was cancelled without a kill"
        )
        buf.error.__cause__ = error
    complete(buf)
