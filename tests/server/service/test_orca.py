"""ORCA load reports (gRFC A51) from the real server, read with the stock grpc stub of the upstream service."""

from __future__ import annotations

import itertools
import time
from typing import Any

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest
from engine_runtime.generated.xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from engine_runtime.generated.xds.service.orca.v3 import orca_pb2, orca_pb2_grpc
from engine_runtime.server.app import EngineServer
from engine_runtime.server.load import DEFAULT_CAPACITY, RPS_FLOOR, UTILIZATION_FLOOR
from engine_runtime.server.orca_service import MIN_INTERVAL
from tests.conftest import ServerFactory
from tests.helpers import first_reply, generate_request

pytestmark = pytest.mark.asyncio


def request(interval: float) -> orca_pb2.OrcaLoadReportRequest:
    req = orca_pb2.OrcaLoadReportRequest()
    # The stubs live in a pool of their own: their Duration is set in place, not copied from duration_pb2's.
    req.report_interval.FromNanoseconds(int(interval * 1e9))
    return req


async def reports(address: str, interval: float, count: int) -> list[tuple[float, OrcaLoadReport]]:
    """``count`` reports with the time each arrived."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = orca_pb2_grpc.OpenRcaServiceStub(channel).StreamCoreMetrics(request(interval), timeout=30)
        got = []
        async for report in call:
            got.append((time.monotonic(), report))
            if len(got) == count:
                call.cancel()
                break
        return got


async def test_an_idle_replica_reports_the_floors_not_zero(make_server: ServerFactory) -> None:
    server = await make_server()
    [(_, report)] = await reports(server.addresses[0], 1.0, 1)
    assert report.application_utilization == pytest.approx(UTILIZATION_FLOOR * RPS_FLOOR)
    assert report.rps_fractional == RPS_FLOOR
    assert dict(report.named_metrics) == {"inflight": 0.0, "queued": 0.0}


async def report_while_running(server: EngineServer, streams: int) -> OrcaLoadReport:
    """One report taken while ``streams`` paced probes run on ``server`` (each has sent its first item)."""
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        stub = pbg.EngineServiceStub(channel)
        calls: list[Any] = [
            stub.Generate(generate_request("probe", CountRequest(delay_s=0.05))) for _ in range(streams)
        ]
        for call in calls:
            await first_reply(call)
        [(_, report)] = await reports(server.addresses[0], 1.0, 1)
        for call in calls:
            call.cancel()
    return report


async def test_reports_count_generations_in_flight_over_the_capacity_cubed(make_server: ServerFactory) -> None:
    report = await report_while_running(await make_server(max_concurrency=4), 3)
    assert report.application_utilization == pytest.approx((3 / 4) ** 3)
    assert report.named_metrics["inflight"] == 3.0
    assert report.named_metrics["queued"] == 0.0
    assert report.rps_fractional >= 3 / 10  # three starts in the last ten seconds at least


async def test_without_a_limit_the_default_capacity_is_the_denominator(make_server: ServerFactory) -> None:
    report = await report_while_running(await make_server(), 10)
    assert report.application_utilization == pytest.approx((10 / DEFAULT_CAPACITY) ** 3)
    assert report.named_metrics["inflight"] == 10.0


@pytest.mark.parametrize(("asked", "expected"), [(0.25, 0.25), (0.01, MIN_INTERVAL), (0.0, MIN_INTERVAL)])
async def test_reports_follow_the_interval_asked_floored(
    make_server: ServerFactory, asked: float, expected: float
) -> None:
    server = await make_server()
    got = await reports(server.addresses[0], asked, 4)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(got)]
    assert all(gap >= expected * 0.9 for gap in gaps), gaps
    assert sum(gaps) / len(gaps) < expected + 0.2, gaps  # not some fixed slower period either


async def test_a_request_that_does_not_parse_is_invalid_argument(make_server: ServerFactory) -> None:
    server = await make_server()
    async with grpc.aio.insecure_channel(server.addresses[0]) as channel:
        method: Any = channel.unary_stream("/xds.service.orca.v3.OpenRcaService/StreamCoreMetrics")
        call = method(b"\xff\xff")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "OrcaLoadReportRequest" in (caught.value.details() or "")


async def test_reports_need_no_token_where_engine_calls_do(make_server: ServerFactory) -> None:
    server = await make_server(auth_token="secret")
    [(_, report)] = await reports(server.addresses[0], 1.0, 1)
    assert report.application_utilization == pytest.approx(UTILIZATION_FLOOR * RPS_FLOOR)
