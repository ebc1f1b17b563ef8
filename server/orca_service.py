"""``xds.service.orca.v3.OpenRcaService``: the replica's load reports (gRFC A51, out-of-band), for stock balancers.

A client's ``weighted_round_robin`` policy (``enableOobLoadReport``), or Envoy's
``client_side_weighted_round_robin``, opens ``StreamCoreMetrics`` on every replica and reads one
``OrcaLoadReport`` per ``report_interval`` (at least :data:`MIN_INTERVAL`). The numbers are :mod:`.load`'s.

The stubs are compiled by ``make proto`` from our own definitions of the upstream wire contract (protos/xds) into a
descriptor pool of their own: see docs/scaling.md (*Where the ORCA stubs come from*) for why.

Example::

    orca = OrcaService(Load(inflight))
    server.add_generic_rpc_handlers([orca.handler()])
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from engine_runtime.generated.xds.data.orca.v3.orca_load_report_pb2 import OrcaLoadReport
from engine_runtime.generated.xds.service.orca.v3.orca_pb2 import OrcaLoadReportRequest

from .errors import EngineError
from .load import Load
from .wire import parse

__all__ = ["MIN_INTERVAL", "ORCA_SERVICE", "OrcaService"]

ORCA_SERVICE = "xds.service.orca.v3.OpenRcaService"
MIN_INTERVAL = 0.1
"""Seconds: a client asking for reports more often (or not saying) gets one every this long (gRFC A51's minimum)."""
MAX_INTERVAL = 3600.0
"""Seconds: a longer interval asked for is cut to this."""


class OrcaService:
    """Streams :class:`~.load.Load`'s figures as ``OrcaLoadReport`` messages at the interval each client asks."""

    def __init__(self, load: Load) -> None:
        self.load = load

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a ``grpc.aio.Server``."""
        return grpc.method_handlers_generic_handler(
            ORCA_SERVICE, {"StreamCoreMetrics": grpc.unary_stream_rpc_method_handler(self.stream_core_metrics)}
        )

    def report(self) -> OrcaLoadReport:
        """One report now: utilization, start rate, and ``named_metrics`` ``inflight`` and ``queued``."""
        figures = self.load.figures()
        return OrcaLoadReport(
            application_utilization=figures.utilization,
            rps_fractional=figures.rps,
            named_metrics={"inflight": float(figures.inflight), "queued": float(figures.queued)},
        )

    async def stream_core_metrics(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        try:
            request = parse(OrcaLoadReportRequest, raw, "the OrcaLoadReportRequest")
        except EngineError as error:
            context.set_code(grpc.StatusCode[error.code.name])
            context.set_details(error.message)
            return
        asked = request.report_interval.seconds + request.report_interval.nanos / 1e9
        interval = min(MAX_INTERVAL, max(MIN_INTERVAL, asked))
        # Until the client goes away (grpc cancels this task) or the server stops.
        while True:
            await context.write(self.report().SerializeToString())
            await asyncio.sleep(interval)
