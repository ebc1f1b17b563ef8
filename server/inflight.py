"""The generations in flight on a server, by request id: what `Stop`, limits and the drain act on.

Plain asyncio: the servicer adds a generation when a call starts it and removes it the moment the call ends,
however it ends, so `Stop` on a finished or killed generation answers NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterator

from .context import Context
from .errors import AlreadyExists, ResourceExhausted
from .outcome import Cause, Ending

__all__ = ["Generation", "InFlight"]

log = logging.getLogger("engine_runtime.service")


class Generation:
    """One generation in flight: its context, its engine, what asked it to stop or killed it, and its totals.

    Every time is ``time.monotonic()``. The first stop's cause and the first kill's cause are both kept; the
    generation's :class:`~.outcome.Ending` is set once, when the servicer is done with it.
    """

    __slots__ = (
        "context",
        "ended",
        "ending",
        "engine",
        "finishing",
        "first_item_at",
        "handed_off",
        "items",
        "kill_cause",
        "messages",
        "resumable",
        "started",
        "stop_cause",
        "stop_key",
    )

    def __init__(self, context: Context, engine: str, *, resumable: bool = False) -> None:
        self.context = context
        self.engine = engine
        self.resumable = resumable
        self.handed_off = False  # ended by the drain for its client to continue elsewhere (How.MIGRATED)
        # What a `Stop` for this generation must carry, so that no client can stop another's (x-stop-key).
        self.stop_key = secrets.token_urlsafe(16)
        self.stop_cause: Cause | None = None
        self.kill_cause: Cause | None = None
        self.started = time.monotonic()
        self.first_item_at: float | None = None
        self.ended: float | None = None
        self.ending: Ending | None = None
        self.finishing: Ending | None = None  # set while the final message is being written
        self.items = 0
        self.messages = 0

    @property
    def id(self) -> str:
        return self.context.id

    @property
    def cause(self) -> Cause | None:
        """What ended it: the first kill's cause, else the first stop's."""
        return self.kill_cause or self.stop_cause

    def stop(self, cause: Cause) -> None:
        if self.stop_cause is None:
            self.stop_cause = cause
        self.context.stop_generating()

    def kill(self, cause: Cause) -> None:
        if self.kill_cause is None:
            self.kill_cause = cause
        self.context.kill()

    def hand_off(self) -> None:
        """End a resumable generation for its client to continue it on another replica: a kill whose ending is
        :attr:`How.MIGRATED <.outcome.How.MIGRATED>`, its status UNAVAILABLE with ``x-continue-elsewhere``."""
        if self.kill_cause is None:
            self.handed_off = True
        self.kill(Cause.DRAIN)

    @property
    def position(self) -> int:
        """How many items of the generation its client has: those it resumed from and those written since."""
        return self.context.resume_from + self.items

    def end(self, ending: Ending) -> None:
        """Record how it ended (once: the first ending is the one the client saw)."""
        if self.ending is None:
            self.ending = ending
            self.ended = time.monotonic()


class InFlight:
    """Generations by request id, with the server-wide and per-engine concurrency limits (0: none)."""

    def __init__(self, max_concurrency: int = 0, max_engine_concurrency: int = 0) -> None:
        self.max_concurrency = max_concurrency
        self.max_engine_concurrency = max_engine_concurrency
        self._by_id: dict[str, Generation] = {}
        self._per_engine: Counter[str] = Counter()
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Generation]:
        return iter(list(self._by_id.values()))

    def get(self, request_id: str) -> Generation | None:
        return self._by_id.get(request_id)

    def count(self, engine: str) -> int:
        return self._per_engine[engine]

    def add(self, generation: Generation) -> None:
        """Admit ``generation`` or raise: ALREADY_EXISTS for a duplicate id, RESOURCE_EXHAUSTED at a limit."""
        if generation.id in self._by_id:
            raise AlreadyExists(f"request id {generation.id!r} is already in flight")
        if self.max_concurrency and len(self._by_id) >= self.max_concurrency:
            raise ResourceExhausted(
                f"server concurrency limit reached: {self.max_concurrency} generations in flight (--max-concurrency)"
            )
        if self.max_engine_concurrency and self._per_engine[generation.engine] >= self.max_engine_concurrency:
            raise ResourceExhausted(
                f"engine concurrency limit reached: {self.max_engine_concurrency} generations of engine "
                f"{generation.engine!r} in flight (--max-engine-concurrency)"
            )
        self._by_id[generation.id] = generation
        self._per_engine[generation.engine] += 1
        self._empty.clear()

    def remove(self, generation: Generation) -> None:
        if self._by_id.get(generation.id) is generation:
            del self._by_id[generation.id]
            self._per_engine[generation.engine] -= 1
            if not self._per_engine[generation.engine]:
                del self._per_engine[generation.engine]
            if not self._by_id:
                self._empty.set()

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until nothing is in flight, at most ``timeout`` seconds; tell whether it is empty."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def drain(self, drain_timeout: float, stop_timeout: float, kill_timeout: float) -> None:
        """Let the generations in flight finish, then stop them, then kill what is left.

        They get ``drain_timeout`` seconds to finish on their own, then a graceful stop (``stop_generating``:
        they end with FINISH_REASON_STOPPED), then ``stop_timeout`` seconds more before the rest are killed (their
        clients see UNAVAILABLE); ``kill_timeout`` later even an engine that ignores its kill has let its call end.
        Refusing new generations meanwhile is the caller's part.

        A resumable generation is handed off (:meth:`Generation.hand_off`) where another would be stopped: its
        client continues it on another replica with nothing lost, so asking it to stop would only truncate it. One
        whose client had already asked it to stop is left to finish, and handed off at the stop timeout.
        """
        if await self.wait_empty(drain_timeout):
            return
        log.info("drain: %s still running after %.1fs; stopping them", _generations(len(self)), drain_timeout)
        for generation in self:
            if generation.resumable and not generation.context.is_stopped():
                generation.hand_off()
            else:
                generation.stop(Cause.DRAIN)
        if await self.wait_empty(stop_timeout):
            return
        log.warning(
            "drain: killing %s that ignored the stop for %.1fs (handing off the resumable ones)",
            _generations(len(self)),
            stop_timeout,
        )
        self.kill_all()
        await self.wait_empty(kill_timeout + 1.0)

    def kill_all(self) -> None:
        """End every generation now (the drain's cause): the resumable ones are handed off, the others killed."""
        for generation in self:
            if generation.resumable:
                generation.hand_off()
            else:
                generation.kill(Cause.DRAIN)


def _generations(count: int) -> str:
    return f"{count} generation" if count == 1 else f"{count} generations"
