"""The generations in flight on a server, by request id: what `Stop`, limits and the drain act on.

Plain asyncio: the servicer adds a generation when a call starts it and removes it the moment the call ends,
however it ends, so `Stop` on a finished or killed generation answers NOT_FOUND. A generation waiting in its
engine's queue (:mod:`.admission`) is in the table too, so `Stop` and the drain find it; it is counted in
:meth:`InFlight.queued`, not in :meth:`InFlight.running`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from .admission import Admission, Place
from .context import Context
from .errors import AlreadyExists, ResourceExhausted
from .ids import stop_key
from .outcome import Cause, Ending

__all__ = ["Generation", "InFlight"]

log = logging.getLogger("engine_runtime.service")


class Generation:
    """One generation in flight: its context, its engine, what asked it to stop or killed it, and its totals.

    Every time is ``time.monotonic()``: ``started`` when the call arrived, ``queued_at`` and ``left_queue_at``
    when it entered and left its engine's queue (None if it never waited), ``admitted_at`` when it took a slot
    (None if its engine never started). The first stop's cause and the first kill's cause are both kept; the
    generation's :class:`~.outcome.Ending` is set once, when the servicer is done with it.
    """

    __slots__ = (
        "admitted_at",
        "context",
        "ended",
        "ending",
        "engine",
        "finishing",
        "first_item_at",
        "handed_off",
        "items",
        "kill_cause",
        "left_queue_at",
        "messages",
        "priority",
        "queued_at",
        "resumable",
        "started",
        "stop_cause",
        "stop_key",
    )

    def __init__(self, context: Context, engine: str, priority: int = 0, *, resumable: bool = False) -> None:
        self.context = context
        self.engine = engine
        self.priority = priority
        self.resumable = resumable
        self.handed_off = False  # ended by the drain for its client to continue elsewhere (How.MIGRATED)
        # What a `Stop` for this generation must carry, so that no client can stop another's (x-stop-key).
        self.stop_key = stop_key()
        self.stop_cause: Cause | None = None
        self.kill_cause: Cause | None = None
        self.started = time.monotonic()
        self.queued_at: float | None = None
        self.left_queue_at: float | None = None
        self.admitted_at: float | None = None
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
    def waited(self) -> float | None:
        """Seconds it spent in its engine's queue (so far, while it waits), or None if it never waited."""
        if self.queued_at is None:
            return None
        return (self.left_queue_at if self.left_queue_at is not None else time.monotonic()) - self.queued_at

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
    """Generations by request id, with the server-wide concurrency limit and each engine's admission (0: none).

    ``len()`` and iteration cover the whole table, queued generations included. Each engine's limit is its
    ``max_concurrency=`` from registration (in ``engine_limits``), else ``max_engine_concurrency``; a call over it
    waits in the engine's queue (``max_queue`` per engine, ``queue_timeout`` seconds at most, 0: no bound but the
    call's deadline). The server-wide ``max_concurrency`` counts running generations and refuses at once.
    """

    def __init__(
        self,
        max_concurrency: int = 0,
        max_engine_concurrency: int = 0,
        *,
        max_queue: int = 0,
        queue_timeout: float = 0.0,
        engine_limits: dict[str, int] | None = None,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.admission = Admission(
            max_engine_concurrency, max_queue=max_queue, queue_timeout=queue_timeout, limits=engine_limits
        )
        self._by_id: dict[str, Generation] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Generation]:
        return iter(list(self._by_id.values()))

    def get(self, request_id: str) -> Generation | None:
        return self._by_id.get(request_id)

    def count(self, engine: str) -> int:
        """Generations of ``engine`` running now (queued ones not counted)."""
        return self.admission.running(engine)

    def running(self) -> int:
        """Generations running now, on every engine (queued ones not counted): the load report's ``inflight``."""
        return self.admission.running()

    def queued(self, engine: str | None = None) -> int:
        """Generations waiting in a queue: of ``engine``, or in total (the load report's ``queued``)."""
        return self.admission.queued(engine)

    def add(self, generation: Generation) -> Place | None:
        """Admit ``generation``: None when it runs now, its :class:`~.admission.Place` when it must wait.

        Raises ALREADY_EXISTS for a duplicate id, RESOURCE_EXHAUSTED at the server's limit, and
        :class:`~.admission.QueueFull` when its engine is at its limit and the queue is full or off.
        """
        if generation.id in self._by_id:
            raise AlreadyExists(f"request id {generation.id!r} is already in flight")
        if self.max_concurrency and self.admission.running() >= self.max_concurrency:
            raise ResourceExhausted(
                f"server concurrency limit reached: {self.max_concurrency} generations in flight (--max-concurrency)"
            )
        place = self.admission.enter(generation, generation.priority)
        self._by_id[generation.id] = generation
        self._empty.clear()
        return place

    def remove(self, generation: Generation) -> None:
        if self._by_id.get(generation.id) is generation:
            del self._by_id[generation.id]
            if generation.admitted_at is not None:
                self.admission.release(generation)
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
        Generations still waiting in a queue are killed first, at once (their clients see UNAVAILABLE with a
        pushback: nothing ran). Refusing new generations meanwhile is the caller's part.

        A resumable generation is handed off (:meth:`Generation.hand_off`) where another would be stopped: its
        client continues it on another replica with nothing lost, so asking it to stop would only truncate it. One
        whose client had already asked it to stop is left to finish, and handed off at the stop timeout.
        """
        for generation in self:
            if generation.admitted_at is None:
                generation.kill(Cause.DRAIN)
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
