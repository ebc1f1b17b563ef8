"""The load figures an ORCA report carries: utilization over capacity, the start rate over its window, floors."""

from __future__ import annotations

import pytest

from engine_runtime.server.context import Context
from engine_runtime.server.inflight import Generation, InFlight
from engine_runtime.server.load import DEFAULT_CAPACITY, RATE_WINDOW, RPS_FLOOR, UTILIZATION_FLOOR, Load


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_fresh_idle_server_reports_the_floors() -> None:
    figures = Load(InFlight(), clock=Clock()).figures()
    assert (figures.utilization, figures.rps, figures.inflight, figures.queued) == (UTILIZATION_FLOOR, RPS_FLOOR, 0, 0)


def test_utilization_is_in_flight_over_capacity_default_or_the_limit() -> None:
    inflight = InFlight()
    for _ in range(5):
        inflight.add(Generation(Context(), "echo"))
    assert Load(inflight, 10).figures().utilization == 0.5
    assert Load(inflight).figures().utilization == 5 / DEFAULT_CAPACITY
    assert Load(inflight, 10, queued=lambda: 7).figures().queued == 7


def test_the_rate_counts_starts_over_the_window_then_forgets_them() -> None:
    clock = Clock()
    load = Load(InFlight(), clock=clock)
    clock.now += 0.5
    for _ in range(4):
        load.started()
    assert load.rate() == 4.0  # less than a second old: divided by one second, not by 0.5
    clock.now += 1.5
    assert load.rate() == 2.0  # two seconds old
    clock.now += RATE_WINDOW
    for _ in range(30):
        load.started()
    assert load.rate() == pytest.approx(30 / RATE_WINDOW)
    clock.now += RATE_WINDOW + 1
    assert load.rate() == 0.0
    assert load.figures().rps == RPS_FLOOR


def test_a_reader_gets_the_mean_in_flight_since_its_last_report() -> None:
    clock, inflight = Clock(), InFlight()
    load = Load(inflight, 10, clock=clock)
    since = load.mark()
    first = Generation(Context(), "echo")
    inflight.add(first)
    load.started(first)
    clock.now += 1.0  # one in flight for 1 s
    second = Generation(Context(), "echo")
    inflight.add(second)
    load.started(second)
    clock.now += 1.0  # two for 1 s
    inflight.remove(first)
    load.finished(first)
    inflight.remove(second)
    load.finished(second)
    clock.now += 2.0  # none for 2 s
    assert load.figures(since).utilization == pytest.approx((1 + 2) / 4 / 10)
    clock.now += 1.0
    assert load.figures(since).utilization == UTILIZATION_FLOOR  # nothing since the last report
    assert load.figures().utilization == UTILIZATION_FLOOR  # without a mark: the number now
