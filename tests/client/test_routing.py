"""How targets become channels, and the fleet's service config (client/routing.py)."""

from __future__ import annotations

import json

import pytest

from engine_runtime.client.routing import (
    FLEET_SERVICE_CONFIG,
    channel_targets,
    dns_name,
    is_fleet,
    replica_addresses,
    split_targets,
)


def test_a_comma_separated_string_is_split_but_an_ipv4_list_stays_one_target() -> None:
    assert split_targets("a:1, b:2,") == ["a:1", "b:2"]
    assert split_targets("ipv4:127.0.0.2:1,127.0.0.3:2") == ["ipv4:127.0.0.2:1,127.0.0.3:2"]
    assert split_targets(["unix:/tmp/s", " x:1 "]) == ["unix:/tmp/s", "x:1"]


def test_ip_literals_are_joined_into_one_fleet_target_names_and_sockets_are_not() -> None:
    assert channel_targets(["127.0.0.2:1", "127.0.0.3:2"]) == ["ipv4:127.0.0.2:1,127.0.0.3:2"]
    assert channel_targets(["[::1]:1", "[::2]:2", "127.0.0.2:1"]) == ["ipv6:[::1]:1,[::2]:2", "127.0.0.2:1"]
    assert channel_targets(["localhost:1", "unix:/tmp/s"]) == ["localhost:1", "unix:/tmp/s"]
    assert channel_targets(["127.0.0.1:50051"]) == ["127.0.0.1:50051"]


@pytest.mark.parametrize(
    ("target", "fleet"),
    [
        ("ipv4:127.0.0.2:1,127.0.0.3:2", True),
        ("dns:///engines.default.svc:50051", True),
        ("ipv4:127.0.0.2:1", False),
        ("127.0.0.1:50051", False),
        ("unix:/tmp/s", False),
    ],
)
def test_what_counts_as_a_fleet(target: str, fleet: bool) -> None:
    assert is_fleet(target) is fleet


def test_replica_addresses_of_each_kind_of_target() -> None:
    assert replica_addresses("ipv4:127.0.0.2:1,127.0.0.3:2") == ["127.0.0.2:1", "127.0.0.3:2"]
    assert replica_addresses("unix:/tmp/s") == ["unix:/tmp/s"]
    assert "127.0.0.1:7" in replica_addresses("dns:///localhost:7")
    assert dns_name("dns://8.8.8.8/engines.svc:50051") == ("engines.svc", "50051")
    assert dns_name("dns:///engines.svc") == ("engines.svc", "443")
    assert dns_name("127.0.0.1:1") is None


def test_the_fleet_config_retries_only_refusals_and_balances_on_load_reports() -> None:
    config = json.loads(FLEET_SERVICE_CONFIG)
    policy = config["loadBalancingConfig"][0]["weighted_round_robin"]
    assert policy["enableOobLoadReport"] is True
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": "engine.v1.EngineService"}]
    assert sorted(method["retryPolicy"]["retryableStatusCodes"]) == ["RESOURCE_EXHAUSTED", "UNAVAILABLE"]
    assert 2 <= method["retryPolicy"]["maxAttempts"] <= 5
