"""The admission queue on its own, in plain asyncio: limits, order, every way out, and churn."""

from __future__ import annotations

import random

import pytest

from engine_runtime.server import Context
from engine_runtime.server.admission import Admission, QueueFull
from engine_runtime.server.inflight import Generation
from engine_runtime.server.outcome import Cause, How

pytestmark = pytest.mark.asyncio


def generation(engine: str = "e", priority: int = 0) -> Generation:
    return Generation(Context(), engine, priority)


async def test_a_registered_limit_wins_over_the_servers_and_zero_means_none() -> None:
    admission = Admission(2, max_queue=0, limits={"one": 1, "free": 0})
    assert admission.enter(generation("one")) is None
    with pytest.raises(QueueFull, match="1 generations of engine 'one' in flight \\(max_concurrency= at registration"):
        admission.enter(generation("one"))
    assert all(admission.enter(generation("free")) is None for _ in range(10))
    assert admission.enter(generation("other")) is None and admission.enter(generation("other")) is None
    with pytest.raises(QueueFull, match="--max-engine-concurrency"):
        admission.enter(generation("other"))
    assert admission.running() == 13 and admission.running("one") == 1 and admission.queued() == 0


async def test_slots_go_by_priority_then_arrival() -> None:
    admission = Admission(1, max_queue=10)
    first = generation()
    assert admission.enter(first) is None
    waiting = [generation(priority=p) for p in (0, 2, -1, 2, 0)]
    places = [admission.enter(g, g.priority) for g in waiting]
    assert all(place is not None for place in places) and admission.queued("e") == 5
    order: list[Generation] = []
    admission.on_admitted(order.append)
    holder = first
    for _ in waiting:
        admission.release(holder)
        holder = order[-1]
    assert order == [waiting[1], waiting[3], waiting[0], waiting[4], waiting[2]]
    assert admission.queued() == 0 and admission.running() == 1


async def test_stop_kill_and_timeouts_take_a_place_out_with_their_ending() -> None:
    admission = Admission(1, max_queue=10, queue_timeout=0.05)
    assert admission.enter(generation()) is None
    stopped, killed, drained, timed, due = (generation() for _ in range(5))
    places = {g: admission.enter(g) for g in (stopped, killed, drained, timed, due)}
    stopped.stop(Cause.STOP_REQUEST)
    killed.kill(Cause.STOP_REQUEST)
    drained.kill(Cause.DRAIN)
    assert admission.queued() == 2  # at once, before anyone awaits anything
    endings = {g: await admission.wait(place, 0.03 if g is due else None) for g, place in places.items() if place}
    stop, kill = endings[stopped], endings[killed]
    assert stop is not None and stop.how is How.STOPPED
    assert kill is not None and kill.how is How.KILLED and kill.error is None
    drain = endings[drained]
    assert drain is not None and drain.error is not None and "shutting down" in drain.error.message
    expired = endings[timed]
    assert expired is not None and expired.how is How.EXPIRED and expired.cause is Cause.QUEUE_TIMEOUT
    assert expired.error is not None and "--queue-timeout 0.05s" in expired.error.message
    deadline = endings[due]  # the call's deadline came before the queue timeout
    assert deadline is not None and deadline.cause is Cause.DEADLINE and deadline.code.name == "DEADLINE_EXCEEDED"
    assert admission.queued() == 0 and admission.running() == 1


async def test_churn_of_leaving_places_is_compacted_and_counts_stay_exact() -> None:
    admission = Admission(1, max_queue=50)
    holder = generation()
    assert admission.enter(holder) is None
    rng = random.Random(5)
    alive: list[Generation] = []
    for _ in range(2000):
        if alive and (len(alive) == 50 or rng.random() < 0.5):
            alive.pop(rng.randrange(len(alive))).kill(Cause.CLIENT_CANCEL)
        else:
            g = generation(priority=rng.randint(-3, 3))
            assert admission.enter(g, g.priority) is not None
            alive.append(g)
        assert admission.queued() == len(alive)
    admitted: list[Generation] = []
    admission.on_admitted(admitted.append)
    for _ in range(len(alive)):
        admission.release(admitted[-1] if admitted else holder)
    expected = sorted(alive, key=lambda g: -g.priority)  # a stable sort keeps arrival order within a priority
    assert admitted == expected and admission.queued() == 0
