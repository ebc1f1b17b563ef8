"""`ResponseStream`: the responses of one generation, local or remote, and how a generation finished.

A stream hands out everything already produced in one go (:meth:`ResponseStream.next_batch`), which is what
lets the servicer coalesce ready outputs into one wire message without ever waiting to fill one. Local streams
are :class:`~.pump.LocalStream`; remote ones are the client's ``RemoteStream``.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Generic, TypeVar

from .context import Context

__all__ = ["FinishReason", "ResponseStream"]

Resp = TypeVar("Resp")


class FinishReason(enum.IntEnum):
    """How a generation finished; values as in ``engine.v1.FinishReason``."""

    UNSPECIFIED = 0
    COMPLETED = 1
    STOPPED = 2


class ResponseStream(Generic[Resp]):
    """The responses of one generation: async-iterable, with the generation's :attr:`context`.

    Leaving an ``async for`` early (``break``, an exception, :meth:`aclose`, or dropping the stream) kills the
    generation. A stream killed by its consumer (or an ancestor context) ends quietly; one killed from the far
    side raises :class:`~.errors.Aborted`.

    Example::

        stream = await engine.generate(EchoRequest(text="a b"))
        async for item in stream:
            print(item.text)
    """

    context: Context

    def __init__(self, context: Context) -> None:
        self.context = context

    async def next_batch(self) -> list[Resp]:
        """Wait for and return every item produced so far (at least one); ``[]`` once the stream has ended.

        Raises the engine's :class:`~.errors.EngineError` after the items produced before it.
        """
        raise NotImplementedError

    @property
    def finish_reason(self) -> FinishReason | None:
        """``COMPLETED`` or ``STOPPED`` once the last item was handed out and the engine returned; else None."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Kill the generation (if it is still running) and wait until it has wound down."""
        raise NotImplementedError

    def __aiter__(self) -> AsyncIterator[Resp]:
        # A fresh async generator per loop: when the loop is left early, the generator is closed (explicitly,
        # or by the event loop's finalizer when it is dropped), and its `finally` kills the generation.
        return self._iterate()

    async def _iterate(self) -> AsyncGenerator[Resp, None]:
        complete = False
        try:
            while True:
                batch = await self.next_batch()
                if not batch:
                    complete = True
                    return
                for item in batch:
                    yield item
        finally:
            if not complete:
                await self.aclose()
