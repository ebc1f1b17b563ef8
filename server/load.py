"""A replica's load, as its ORCA reports (gRFC A51) give it to load-aware clients and proxies.

Plain asyncio: :class:`Load` counts the generations that start (the servicer's ``on_started`` hook) and reads
the ones in flight; :meth:`Load.figures` is one report's numbers. The gRPC side is :mod:`.orca_service`.

Stock weighted round-robin weighs a replica by ``rps_fractional / application_utilization``, ignores a report
where either is 0 (the replica then gets the average weight), and places only the *start* of each stream. So:

- ``application_utilization`` = (generations in flight now / capacity) cubed. Capacity is ``--max-concurrency``
  or, without one, :data:`DEFAULT_CAPACITY`; the cube keeps it a fraction (1.0 at capacity) that grows steeply
  with load, like a queue's delay: a replica with 20% more in flight than another weighs 1.7x less, not 1.2x,
  so new streams go to the replicas with fewer before the difference grows. Measured with a linear utilization
  (the mean over the report interval, or the number now), max/min in flight across three replicas stayed at
  1.37-1.46 with every third stream long; cubed, 1.2 (docs/scaling.md, *Measured*);
- it is at least :data:`UTILIZATION_FLOOR` times the rate, so that every replica with little in flight (short
  calls, or none) weighs the same, ``1 / UTILIZATION_FLOOR``: calls then spread evenly, and a replica added by
  a scale-out, whose rate is still low, gets its share instead of starving;
- ``rps_fractional`` = generations started per second over the last :data:`RATE_WINDOW` seconds (or since the
  server started, if that is shorter, and at least one second), at least :data:`RPS_FLOOR`.

Example::

    load = Load(inflight, capacity=8)
    service.on_started(load.started)
    load.figures()      # LoadFigures(utilization=1e-08, rps=0.1, inflight=0, queued=0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .inflight import Generation, InFlight

__all__ = ["DEFAULT_CAPACITY", "RATE_WINDOW", "RPS_FLOOR", "SHAPE", "UTILIZATION_FLOOR", "Load", "LoadFigures"]

DEFAULT_CAPACITY = 100
"""Generations in flight that count as full utilization (1.0) on a server without ``--max-concurrency``."""
RATE_WINDOW = 60
"""Seconds over which ``rps_fractional`` counts the generations that started."""
UTILIZATION_FLOOR = 1e-7
"""Per generation started a second: the least ``application_utilization`` a serving replica reports is this times
``rps_fractional`` (stock WRR ignores 0), so that lightly loaded replicas weigh ``1 / UTILIZATION_FLOOR`` alike."""
SHAPE = 3
"""``application_utilization`` is (in flight / capacity) to this power: steep with load (see the module's text)."""
RPS_FLOOR = 0.1
"""The least ``rps_fractional`` a serving replica reports (stock WRR ignores 0)."""


@dataclass(frozen=True)
class LoadFigures:
    """One load report: utilization and start rate (both floored), and the generations running and queued."""

    utilization: float
    rps: float
    inflight: int
    queued: int


class Load:
    """The load of one server: what is in flight (``inflight``), what started lately, what waits (``queued``).

    ``queued`` reads the generations waiting for admission (0 on a server without a queue).
    """

    def __init__(
        self,
        inflight: InFlight,
        capacity: int = 0,
        *,
        queued: Callable[[], int] = lambda: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inflight = inflight
        self.capacity = capacity or DEFAULT_CAPACITY
        self.queued = queued
        self._clock = clock
        self._born = clock()
        # Starts per whole second, in a ring of RATE_WINDOW slots: memory stays fixed whatever the rate.
        self._slots = [0] * RATE_WINDOW
        self._slot_second = [-1] * RATE_WINDOW

    def started(self, generation: Generation | None = None) -> None:
        """The ``on_started`` hook: one more generation started now."""
        second = math.floor(self._clock())
        slot = second % RATE_WINDOW
        if self._slot_second[slot] != second:
            self._slot_second[slot], self._slots[slot] = second, 0
        self._slots[slot] += 1

    def rate(self) -> float:
        """Generations started per second over the window (unfloored)."""
        now = self._clock()
        second = math.floor(now)
        recent = sum(
            count for count, at in zip(self._slots, self._slot_second, strict=True) if second - at < RATE_WINDOW
        )
        return recent / min(float(RATE_WINDOW), max(1.0, now - self._born))

    def figures(self) -> LoadFigures:
        """The numbers of one report now."""
        running = self.inflight.running()
        rps = max(RPS_FLOOR, self.rate())
        return LoadFigures(
            utilization=max(UTILIZATION_FLOOR * rps, (running / self.capacity) ** SHAPE),
            rps=rps,
            inflight=running,
            queued=self.queued(),
        )
