"""Admission: each engine's concurrency slots, and the queue of calls waiting for one (SPEC section 10).

An engine with a concurrency limit (``max_concurrency=`` at registration, else ``--max-engine-concurrency``)
runs at most that many generations at once. A call beyond it waits in the engine's queue, up to ``--max-queue``
calls (0: no queue, it is refused at once), highest ``GenerateRequest.priority`` first, then oldest. A full
queue refuses with :class:`QueueFull` (RESOURCE_EXHAUSTED, safe to retry elsewhere: nothing ran).

A queued call is a generation already: its :class:`Place` is linked under the generation's context, so a stop
or a kill (a ``Stop``, the session's control, the drain, the servicer's kill on a client cancel or deadline)
takes it out of the queue at once, synchronously, and its engine never starts. Plain asyncio, no gRPC::

    admission = Admission(max_engine_concurrency=1, max_queue=8)
    place = admission.enter(generation, priority=5)     # None: it has a slot now
    if place is not None:
        ending = await admission.wait(place, call_timeout=None)   # None: it has a slot now
    ...
    admission.release(generation)                       # its slot goes to the next in line
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .errors import Code, EngineError, ResourceExhausted, Unavailable
from .outcome import Cause, Ending, How

if TYPE_CHECKING:
    from .context import Link
    from .inflight import Generation

__all__ = ["DEADLINE_MARGIN", "Admission", "Place", "QueueFull"]

DEADLINE_MARGIN = 0.02
"""Seconds before its deadline at which a still-queued call ends DEADLINE_EXCEEDED naming the time it waited:
the status must reach the client before the client's own timer ends the call with grpc's bare message."""

Hook = Callable[["Generation"], None]
LeftHook = Callable[["Generation", "Cause | None"], None]


class QueueFull(ResourceExhausted):
    """The engine is at its concurrency limit and its queue is full (or off): refused, nothing ran."""


class Place:
    """A queued generation's place in its engine's line.

    It is linked under the generation's context as a child: the context's stop or kill calls it first, and it
    leaves the line at once. Once it is not ``waiting``, ``cause`` says what took it out (None: it was admitted).
    """

    __slots__ = ("admission", "cause", "future", "generation", "line", "link", "timer", "waiting")

    def __init__(self, admission: Admission, generation: Generation, line: _Line) -> None:
        self.admission = admission
        self.generation = generation
        self.line = line
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting = True
        self.cause: Cause | None = None
        self.link: Link | None = None
        self.timer: asyncio.TimerHandle | None = None

    def stop_generating(self) -> None:
        self.admission.leave(self, self.generation.cause or Cause.STOP_REQUEST)

    stop = stop_generating

    def kill(self) -> None:
        # A kill without a recorded cause is the servicer ending a call that is over: the client is gone.
        self.admission.leave(self, self.generation.cause or Cause.CLIENT_CANCEL)

    def is_stopped(self) -> bool:
        return not self.waiting

    def is_killed(self) -> bool:
        return False


class _Line:
    """One engine's slots and queue: a heap of ``(-priority, arrival, place)`` with lazy removal."""

    __slots__ = ("dead", "heap", "limit", "running", "source", "waiting")

    def __init__(self, limit: int, source: str) -> None:
        self.limit = limit
        self.source = source  # the option that set the limit, for messages
        self.running = 0
        self.waiting = 0
        self.dead = 0  # places in the heap that already left
        self.heap: list[tuple[int, int, Place]] = []

    def full(self) -> bool:
        return bool(self.limit) and self.running >= self.limit


class Admission:
    """Per-engine concurrency slots and priority queues; see the module docstring.

    ``limits`` are the engines' own limits from registration (0: none, even under ``max_engine_concurrency``);
    other engines get ``max_engine_concurrency`` (0: none). ``queue_timeout`` bounds a wait (0: only the call's
    deadline does). :meth:`on_admitted`, :meth:`on_queued` and :meth:`on_left` tell metrics and logs.
    """

    def __init__(
        self,
        max_engine_concurrency: int = 0,
        *,
        max_queue: int = 0,
        queue_timeout: float = 0.0,
        limits: Mapping[str, int] | None = None,
    ) -> None:
        self.max_engine_concurrency = max_engine_concurrency
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.limits = dict(limits or {})
        self._admitted: list[Hook] = []
        self._queued_hooks: list[Hook] = []
        self._left: list[LeftHook] = []
        self._lines: dict[str, _Line] = {}
        self._order = itertools.count()
        self._running = 0
        self._queued = 0

    def on_admitted(self, hook: Hook) -> None:
        """Call ``hook(generation)`` when a generation takes a slot (its engine starts)."""
        self._admitted.append(hook)

    def on_queued(self, hook: Hook) -> None:
        """Call ``hook(generation)`` when a generation starts waiting in its engine's queue."""
        self._queued_hooks.append(hook)

    def on_left(self, hook: LeftHook) -> None:
        """Call ``hook(generation, cause)`` the moment a generation leaves the queue: cause None when it was
        admitted, else what took it out (a client cancel, its deadline, a stop request, the drain, the timeout)."""
        self._left.append(hook)

    def _line(self, engine: str) -> _Line:
        line = self._lines.get(engine)
        if line is None:
            if engine in self.limits:
                line = _Line(self.limits[engine], "max_concurrency= at registration")
            else:
                line = _Line(self.max_engine_concurrency, "--max-engine-concurrency")
            self._lines[engine] = line
        return line

    def running(self, engine: str | None = None) -> int:
        """Generations holding a slot: of ``engine``, or of every engine."""
        if engine is None:
            return self._running
        line = self._lines.get(engine)
        return line.running if line is not None else 0

    def queued(self, engine: str | None = None) -> int:
        """Generations waiting in the queue: of ``engine``, or of every engine."""
        if engine is None:
            return self._queued
        line = self._lines.get(engine)
        return line.waiting if line is not None else 0

    def enter(self, generation: Generation, priority: int = 0) -> Place | None:
        """Give ``generation`` a slot now (None) or a place in its engine's queue, or raise :class:`QueueFull`."""
        line = self._line(generation.engine)
        if not line.full() and not line.waiting:
            self._take_slot(line, generation)
            return None
        if line.waiting >= self.max_queue:
            queue = f", and its queue is full: {line.waiting} waiting (--max-queue)" if self.max_queue else ""
            raise QueueFull(
                f"engine concurrency limit reached: {line.limit} generations of engine {generation.engine!r} in "
                f"flight ({line.source}){queue}"
            )
        place = Place(self, generation, line)
        heapq.heappush(line.heap, (-priority, next(self._order), place))
        line.waiting += 1
        self._queued += 1
        generation.queued_at = time.monotonic()
        place.link = generation.context.link_child(place)
        for hook in self._queued_hooks:
            hook(generation)
        return place

    async def wait(self, place: Place, call_timeout: float | None) -> Ending | None:
        """Wait for a slot: None once the generation holds one, else the :class:`Ending` of the queued call.

        ``call_timeout`` is what is left of the call's deadline (None: none). A cancellation of the waiting task
        propagates; the servicer then kills the generation, which takes the place out of the queue.
        """
        bound, cause = self._bound(call_timeout)
        if place.waiting:
            if bound is not None:
                place.timer = asyncio.get_running_loop().call_later(bound, self.leave, place, cause)
            await place.future
        if place.cause is None:
            return None
        return self._ending(place)

    def _bound(self, call_timeout: float | None) -> tuple[float | None, Cause]:
        """How long a call may wait, and the cause of its end if it waits that long."""
        deadline = None if call_timeout is None else max(0.0, call_timeout - DEADLINE_MARGIN)
        if self.queue_timeout and (deadline is None or self.queue_timeout < deadline):
            return self.queue_timeout, Cause.QUEUE_TIMEOUT
        return deadline, Cause.DEADLINE

    def _ending(self, place: Place) -> Ending:
        generation = place.generation
        waited = f"waited {generation.waited or 0.0:.3f}s in the queue of engine {generation.engine!r}"
        if place.cause is Cause.QUEUE_TIMEOUT:
            message = f"{waited}, past --queue-timeout {self.queue_timeout:g}s"
            return Ending(How.EXPIRED, Cause.QUEUE_TIMEOUT, ResourceExhausted(message))
        if place.cause is Cause.DEADLINE:
            message = f"{waited}; the call's deadline passed before its engine could start"
            return Ending(How.EXPIRED, Cause.DEADLINE, EngineError(Code.DEADLINE_EXCEEDED, message))
        if not generation.context.is_killed():
            return Ending(How.STOPPED, generation.cause)
        if generation.cause is Cause.DRAIN:
            message = f"the server is shutting down: generation {generation.id!r} {waited} and never started"
            return Ending(How.KILLED, Cause.DRAIN, Unavailable(message))
        return Ending(How.KILLED, generation.cause)

    def leave(self, place: Place, cause: Cause) -> None:
        """Take ``place`` out of the queue now, for ``cause`` (idempotent: the first way out counts)."""
        if not place.waiting:
            return
        place.cause = cause
        line = place.line
        line.dead += 1
        self._gone(place)
        # Dead places are dropped when they reach the top; a churn of cancels while no slot frees compacts here.
        if line.dead > 64 and line.dead > line.waiting:
            line.heap = [entry for entry in line.heap if entry[2].waiting]
            heapq.heapify(line.heap)
            line.dead = 0

    def release(self, generation: Generation) -> None:
        """A generation that held a slot ended: the slot goes to the next in its engine's line."""
        line = self._line(generation.engine)
        line.running -= 1
        self._running -= 1
        while line.heap and not line.full():
            place = heapq.heappop(line.heap)[2]
            if not place.waiting:
                line.dead -= 1
                continue
            self._gone(place)
            self._take_slot(line, place.generation)

    def _gone(self, place: Place) -> None:
        """Everything that follows a place leaving the queue, whichever way it left."""
        generation = place.generation
        generation.left_queue_at = time.monotonic()
        place.waiting = False
        place.line.waiting -= 1
        self._queued -= 1
        if place.timer is not None:
            place.timer.cancel()
        if place.link is not None:
            place.link.unlink()
        if not place.future.done():
            place.future.set_result(None)
        for hook in self._left:
            hook(generation, place.cause)

    def _take_slot(self, line: _Line, generation: Generation) -> None:
        line.running += 1
        self._running += 1
        generation.admitted_at = time.monotonic()
        for hook in self._admitted:
            hook(generation)
