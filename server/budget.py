"""The output budget: how many bytes of large items a server holds for slow readers at once.

An item stays in memory from the engine's ``yield`` until the client's HTTP/2 window lets grpc send it, so
clients that never read could make a server hold items without bound. Small items (up to :data:`FREE_BYTES`,
the common case of tokens and hits) pass without accounting, so a stream of them is never held up by anyone
else; a larger one takes its size from a budget the server shares (``--max-output-bytes``) in the engine's
pump, before it is buffered, and gives it back once its message is written; while the budget is spent the
engine waits at its ``yield``, oldest first. An item larger than the whole budget goes when nothing else holds
any (docs/operations.md gives the measured figures).

Example::

    budget = OutputBudget(64 * 1024 * 1024)
    await budget.acquire(len(data))    # in the pump, before a large item is buffered
    ...
    budget.release(len(data))          # once the message that carried it is written
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["DEFAULT_MAX_OUTPUT_BYTES", "FREE_BYTES", "OutputBudget"]

FREE_BYTES = 64 * 1024
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024


class OutputBudget:
    """Bytes of large items buffered or in grpc's hands, bounded by ``limit``."""

    def __init__(self, limit: int = DEFAULT_MAX_OUTPUT_BYTES) -> None:
        self.limit = limit
        self.held = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, size: int) -> None:
        """Take ``size`` bytes (nothing for a small message), waiting while the budget is spent."""
        if size <= FREE_BYTES:
            return
        if not self._waiting and (self.held + size <= self.limit or not self.held):
            self.held += size
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((size, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.cancelled():
                # Its caller went away while waiting; release() skips it if it is still in the queue.
                self._wake()
            else:
                self.release(size)  # granted just as the caller was cancelled: give it back
            raise

    def release(self, size: int) -> None:
        """Give back what :meth:`acquire` took for a message of ``size`` bytes."""
        if size <= FREE_BYTES:
            return
        self.held -= size
        self._wake()

    def _wake(self) -> None:
        """Grant the waiters at the head of the queue that now fit (a cancelled waiter is dropped)."""
        while self._waiting:
            wanted, granted = self._waiting[0]
            if granted.done():
                self._waiting.popleft()
                continue
            if self.held and self.held + wanted > self.limit:
                return
            self._waiting.popleft()
            self.held += wanted
            granted.set_result(None)
