"""What a local engine's pump and its stream's consumer share: the buffer of produced items, and its end.

Deliberately no reference to the stream: a consumer that drops its stream lets it be collected (which kills the
generation), while the pump, holding only this, runs on to its end.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .budget import OutputBudget
from .context import Context

__all__ = ["Buffer", "complete"]


class Buffer:
    """The items produced and not yet taken, the waits on both sides, and how the engine ended."""

    __slots__ = (
        "budget",
        "ctx",
        "engine",
        "error",
        "finished",
        "given_up",
        "held",
        "items",
        "kill_timeout",
        "killed_by_engine",
        "max_bytes",
        "max_items",
        "nbytes",
        "space",
        "stopped",
        "task",
        "waiter",
    )

    def __init__(self, ctx: Context, engine: str, max_items: int, max_bytes: int, kill_timeout: float) -> None:
        self.ctx = ctx
        self.engine = engine
        self.kill_timeout = kill_timeout
        self.budget: OutputBudget | None = None
        self.held = 0  # bytes of the server's output budget taken for the large items in `items`
        self.given_up = False
        self.items: list[Any] = []
        self.nbytes = 0
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.waiter: asyncio.Future[None] | None = None
        self.space: asyncio.Future[None] | None = None
        self.finished = False
        self.stopped = False
        self.killed_by_engine = False
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def complete(buf: Buffer) -> None:
    """The engine's task is over (or given up on): wake both sides, once and for all."""
    buf.finished = True
    buf.stopped = buf.ctx.is_stopped()
    buf.ctx.mark_done()
    space, buf.space = buf.space, None
    if space is not None and not space.done():
        space.cancel()
    buf.wake()
