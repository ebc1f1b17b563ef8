"""The idealized balancers of benchmarks.balance_model behave as their definitions say."""

from __future__ import annotations

import pytest

from benchmarks.balance_model import simulate


def test_round_robin_sends_every_long_stream_of_the_periodic_pattern_to_one_replica() -> None:
    run = simulate("round_robin", "periodic", 20)
    assert max(run.mean_inflight_per_replica) > 10 * min(run.mean_inflight_per_replica)


@pytest.mark.parametrize("pattern", ["random", "periodic"])
def test_knowing_more_balances_better(pattern: str) -> None:
    now, reported, blind = (
        simulate(policy, pattern, 20) for policy in ("least_loaded", "least_loaded_0.1s", "round_robin")
    )
    assert 1.0 < now.mean_max_over_min <= reported.mean_max_over_min < blind.mean_max_over_min


def test_a_seed_gives_the_same_run_and_another_seed_another() -> None:
    assert simulate("least_loaded_0.1s", "random", 20, seed=3) == simulate("least_loaded_0.1s", "random", 20, seed=3)
    assert simulate("round_robin", "random", 20, seed=3) != simulate("round_robin", "random", 20, seed=4)


def test_an_unknown_policy_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'random_pick'"):
        simulate("random_pick", "random", 20)
