"""The load figures an ORCA report carries: utilization over capacity (cubed), the start rate, the floors."""

from __future__ import annotations

import pytest

from engine_runtime.server.context import Context
from engine_runtime.server.inflight import Generation, InFlight
from engine_runtime.server.load import DEFAULT_CAPACITY, RATE_WINDOW, RPS_FLOOR, SHAPE, UTILIZATION_FLOOR, Load


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_fresh_idle_server_reports_the_floors() -> None:
    figures = Load(InFlight(), clock=Clock()).figures()
    assert (figures.utilization, figures.rps, figures.inflight, figures.queued) == (
        UTILIZATION_FLOOR * RPS_FLOOR,
        RPS_FLOOR,
        0,
        0,
    )


def test_utilization_is_in_flight_over_capacity_default_or_the_limit_cubed() -> None:
    inflight = InFlight()
    for _ in range(5):
        inflight.add(Generation(Context(), "echo"))
    assert SHAPE == 3
    assert Load(inflight, 10).figures().utilization == pytest.approx(0.5**3)
    assert Load(inflight, 5).figures().utilization == 1.0  # at capacity: full, whatever the shape
    assert Load(inflight).figures().utilization == pytest.approx((5 / DEFAULT_CAPACITY) ** 3)
    assert Load(inflight, 10, queued=lambda: 7).figures().queued == 7


def test_the_weight_falls_steeply_with_load_and_is_the_same_for_every_lightly_loaded_replica() -> None:
    """What stock weighted round-robin computes from a report: rps / utilization."""

    def weight(running: int, starts: int) -> float:
        clock, inflight = Clock(), InFlight()
        load = Load(inflight, clock=clock)
        for _ in range(running):
            inflight.add(Generation(Context(), "echo"))
        for _ in range(starts):
            load.started()
        figures = load.figures()
        return figures.rps / figures.utilization

    # 20% more in flight at the same rate weighs 1.2 ** 3 = 1.73x less: new streams go to the other one.
    assert weight(25, 10) / weight(30, 10) == pytest.approx(1.2**3)
    # Idle or nearly: the floor, proportional to the rate, makes the weight the same whatever the rate, so a new
    # replica (a low rate) is not starved beside busy ones (a high rate).
    assert weight(0, 1) == weight(0, 50) == weight(1, 50) == pytest.approx(1 / UTILIZATION_FLOOR)


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
