"""The fleet harness (benchmarks/fleet.py): real replicas on distinct loopback hosts, and its fault injection."""

from __future__ import annotations

import grpc
import psutil
import pytest

from benchmarks.fleet import FleetError, fleet
from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from tests.helpers import OWN_CONNECTION


def list_engines(target: str, timeout: float = 10) -> list[str]:
    with grpc.insecure_channel(target, options=OWN_CONNECTION) as channel:
        reply = pbg.EngineServiceStub(channel).ListEngines(pb.ListEnginesRequest(), timeout=timeout)
        return [info.name for info in reply.engines]


def test_replicas_serve_on_their_own_hosts_and_the_target_names_them_all() -> None:
    with fleet(3, args=["--drain-timeout", "1"]) as f:
        assert [a.rsplit(":", 1)[0] for a in f.addresses] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        assert f.target == "ipv4:" + ",".join(f.addresses)
        assert "echo" in list_engines(f.target)
        for address in f.addresses:
            assert "echo" in list_engines(address)


def test_kill_drain_freeze_and_add() -> None:
    with fleet(3, args=["--drain-timeout", "1"]) as f:
        f.kill(0)
        assert not f[0].alive and f[0].wait() < 0
        f.drain(1)
        assert f[1].wait() == 0  # a drain ends cleanly
        f.freeze(2)
        with pytest.raises(grpc.RpcError) as frozen:
            list_engines(f[2].address, timeout=0.5)
        assert frozen.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        f.thaw(2)
        assert "echo" in list_engines(f[2].address)
        added = f.add()
        assert added.host == "127.0.0.5"
        assert f.target == f"ipv4:{f[2].address},{added.address}"
    assert not any(r.alive for r in f.replicas)


def test_a_replica_that_cannot_start_is_reported_and_nothing_is_left_behind() -> None:
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    with pytest.raises(FleetError, match="did not start"), fleet(2, replica_args={1: ["no.such.module"]}):
        pass
    left = [c for c in psutil.Process().children(recursive=True) if c.pid not in before and c.is_running()]
    assert [c for c in left if c.status() != psutil.STATUS_ZOMBIE] == []
