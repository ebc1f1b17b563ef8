"""A replica's load, as its ORCA reports (gRFC A51) give it to load-aware clients and proxies.

Plain asyncio: :class:`Load` counts the generations that start (the servicer's ``on_started`` hook) and reads
the ones in flight; :meth:`Load.figures` is one report's numbers. The gRPC side is :mod:`.orca_service`.

Stock weighted round-robin weighs a replica by ``rps_fractional / application_utilization`` and ignores a report
where either is 0 (the replica then gets the average weight). So both are floored on a serving replica:

- ``application_utilization`` = generations in flight / capacity, at least :data:`UTILIZATION_FLOOR`. Capacity is
  ``--max-concurrency`` or, without one, :data:`DEFAULT_CAPACITY`. In flight is averaged over the time since the
  reader's previous report (the number now, in a stream's first report): by Little's law the mean in flight is
  starts per second times mean seconds, so the weight ``rps / utilization`` is ``capacity / mean seconds`` and a
  replica's share of the calls does not feed its own rate;
- ``rps_fractional`` = generations started per second over the last :data:`RATE_WINDOW` seconds (or since the
  server started, if that is shorter, and at least one second), at least :data:`RPS_FLOOR`.

An idle replica so weighs ``RPS_FLOOR / UTILIZATION_FLOOR`` = 10 000, more than a loaded one (``rps * capacity /
in flight``, e.g. 2/s * 100 / 20 = 10), and new calls go to it first (a new replica of a scale-out too).

Example::

    load = Load(inflight, capacity=8)
    service.on_started(load.started)
    service.on_finished(load.finished)
    load.figures()      # LoadFigures(utilization=1e-05, rps=0.1, inflight=0, queued=0)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from .inflight import Generation, InFlight

__all__ = ["DEFAULT_CAPACITY", "RATE_WINDOW", "RPS_FLOOR", "UTILIZATION_FLOOR", "Load", "LoadFigures"]

DEFAULT_CAPACITY = 100
"""Generations in flight that count as full utilization (1.0) on a server without ``--max-concurrency``."""
RATE_WINDOW = 60
"""Seconds over which ``rps_fractional`` counts the generations that started."""
UTILIZATION_FLOOR = 1e-5
"""The least ``application_utilization`` a serving replica reports (stock WRR ignores 0)."""
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
        # Generation-seconds so far: in flight integrated over time, brought up to date at each start and finish.
        self._area = 0.0
        self._counted = 0
        self._counted_at = self._born

    def _integrate(self) -> float:
        now = self._clock()
        self._area += self._counted * (now - self._counted_at)
        self._counted, self._counted_at = self.inflight.running(), now
        return now

    def finished(self, *_: object) -> None:
        """The ``on_finished`` hook: one generation fewer in flight."""
        self._integrate()

    def mark(self) -> list[float]:
        """Where a reader's averaging starts: pass it to :meth:`figures`, which moves it on."""
        now = self._integrate()
        return [self._area, now]

    def started(self, generation: Generation | None = None) -> None:
        """The ``on_started`` hook: one more generation started now."""
        self._integrate()
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

    def figures(self, since: list[float] | None = None) -> LoadFigures:
        """The numbers of one report now; utilization averaged since ``since`` (a :meth:`mark`, moved on to now)."""
        running = self.inflight.running()
        average = float(running)
        if since is not None:
            now = self._integrate()
            area = self._area
            if now > since[1]:
                average = (area - since[0]) / (now - since[1])
            since[:] = [area, now]
        return LoadFigures(
            utilization=max(UTILIZATION_FLOOR, average / self.capacity),
            rps=max(RPS_FLOOR, self.rate()),
            inflight=running,
            queued=self.queued(),
        )
