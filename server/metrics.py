"""Prometheus metrics of the engine service, fed by its start and finish hooks, and their HTTP endpoint.

Nothing here runs per item: a generation is counted when it is admitted and once more when it ends, from the
totals its :class:`~.inflight.Generation` carries (items, messages, cause, first-item time). Every series
is per engine (``engine="<name>"``):

=============================================  =========  =============  ===========================================
metric                                         type       extra labels   what
=============================================  =========  =============  ===========================================
``engine_requests_total``                      counter    ``code``       generations ended, by final status
``engine_requests_in_flight``                  gauge                     generations running now
``engine_time_to_first_response_seconds``      histogram                 admission to the first message with items
``engine_request_duration_seconds``            histogram                 admission to the end, however it ended
``engine_items_sent_total``                    counter                   engine outputs written to clients
``engine_messages_sent_total``                 counter                   response messages carrying them
``engine_stops_total``                         counter    ``cause``      generations asked to stop (and not killed)
``engine_kills_total``                         counter    ``cause``      generations killed
``engine_handoffs_total``                      counter                   resumable generations handed off by a drain
``engine_requests_refused_total``              counter    ``code``       calls refused before a generation started
``engine_zombie_tasks``                        gauge                     engine tasks that ignored a kill, still running
``engine_event_loop_stall_seconds``            histogram                 event-loop stalls, by the engine running then
``engine_queue_depth``                         gauge                     calls waiting in the engine's queue now
``engine_queue_wait_seconds``                  histogram                 time a call spent in the queue, however it left
``engine_queue_exits_total``                   counter    ``cause``      calls that left the queue: ``admitted`` or why
=============================================  =========  =============  ===========================================

A server owns its own :class:`~prometheus_client.CollectorRegistry` (with the process, platform and GC
collectors), so several servers in one process do not collide. Under ``--workers`` the metrics are written in
prometheus-client's multiprocess mode instead, and the supervisor serves one merged view (:mod:`.worker_metrics`).

Example::

    metrics = ServerMetrics()
    metrics.attach(server.service)
    endpoint = metrics.serve("127.0.0.1", 9090)       # http://127.0.0.1:9090/metrics
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .errors import Code, EngineError
from .inflight import Generation
from .outcome import Cause, How
from .zombies import ZOMBIES

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .service import EngineService

__all__ = ["DURATION_BUCKETS", "TTFR_BUCKETS", "MetricsEndpoint", "MetricsStartError", "ServerMetrics"]

log = logging.getLogger("engine_runtime.server")

# Milliseconds (a unary engine on loopback) to a minute (a model that loads before its first token).
TTFR_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STALL_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A millisecond (a slot that frees at once) to ten minutes (a long queue in front of slow generations).
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0)
# Milliseconds to half an hour: streams can be long-lived.
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip


class _Series(NamedTuple):
    """The per-engine children, looked up once per engine instead of once per generation."""

    in_flight: Gauge
    ttfr: Histogram
    duration: Histogram
    items: Counter
    messages: Counter


class ServerMetrics:
    """The engine service's metrics; :meth:`attach` hooks them to a service.

    ``registry`` defaults to a new registry of this server's own, with the process, platform and GC collectors.
    With ``multiprocess=True`` (a ``--workers`` worker) the metrics are registered nowhere: prometheus-client
    writes them to ``PROMETHEUS_MULTIPROC_DIR``, which the supervisor reads, and :attr:`registry` is ``None``.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, multiprocess: bool = False) -> None:
        if multiprocess:
            registry = None
        elif registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        self._define_generation_metrics(registry)
        self.kills = Counter("engine_kills", "Generations killed, by cause.", ["engine", "cause"], registry=registry)
        self.handoffs = Counter(
            "engine_handoffs",
            "Resumable generations a drain ended for their clients to continue on another replica.",
            ["engine"],
            registry=registry,
        )
        self.refused = Counter(
            "engine_requests_refused",
            "Calls refused before a generation started (bad request, unknown engine, limits, draining), by status; "
            'engine="" when the call named no served engine.',
            ["engine", "code"],
            registry=registry,
        )
        self.zombies = Gauge(
            "engine_zombie_tasks",
            "Engine tasks that ignored a kill for --kill-timeout and still run (cancelled again now and then).",
            ["engine"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.stalls = Histogram(
            "engine_event_loop_stall_seconds",
            'Event-loop stalls over --loop-stall-warning, by the engine that was running (engine="" for none).',
            ["engine"],
            registry=registry,
            buckets=STALL_BUCKETS,
        )
        self._define_queue_metrics(registry)
        self._series: dict[str, _Series] = {}

    def _define_queue_metrics(self, registry: CollectorRegistry | None) -> None:
        self.queue_depth = Gauge(
            "engine_queue_depth",
            "Calls waiting in the engine's queue for a concurrency slot now.",
            ["engine"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.queue_wait = Histogram(
            "engine_queue_wait_seconds",
            "Seconds a call waited in the engine's queue, however it left it.",
            ["engine"],
            registry=registry,
            buckets=QUEUE_BUCKETS,
        )
        self.queue_exits = Counter(
            "engine_queue_exits",
            'Calls that left the engine\'s queue, by cause: "admitted" (it got a slot) or what took it out.',
            ["engine", "cause"],
            registry=registry,
        )

    def _define_generation_metrics(self, registry: CollectorRegistry | None) -> None:
        labels = ["engine"]
        self.requests = Counter(
            "engine_requests", "Generations ended, by final gRPC status.", [*labels, "code"], registry=registry
        )
        # livesum: the sum over the workers alive now, so a dead worker's generations do not linger.
        self.in_flight = Gauge(
            "engine_requests_in_flight",
            "Generations running now.",
            labels,
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.ttfr = Histogram(
            "engine_time_to_first_response_seconds",
            "Seconds from admitting a generation to writing its first message with items.",
            labels,
            registry=registry,
            buckets=TTFR_BUCKETS,
        )
        self.duration = Histogram(
            "engine_request_duration_seconds",
            "Seconds from admitting a generation to its end, however it ended.",
            labels,
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.items = Counter("engine_items_sent", "Engine outputs written to clients.", labels, registry=registry)
        self.messages = Counter(
            "engine_messages_sent",
            "Response messages written to clients (items / messages is the coalescing ratio).",
            labels,
            registry=registry,
        )
        self.stops = Counter(
            "engine_stops",
            "Generations asked to stop gracefully that were not killed afterwards, by cause.",
            [*labels, "cause"],
            registry=registry,
        )

    def attach(self, service: EngineService) -> None:
        """Count every generation ``service`` runs, and show each of its engines at zero before any traffic."""
        for name in service.registry.names():
            self._engine(name)
            self.queue_depth.labels(name)
        service.on_started(self.started)
        service.on_finished(self.finished)
        service.inflight.admission.on_queued(self.queued)
        service.inflight.admission.on_left(self.left_queue)
        service.on_refused(self.refused_call)
        ZOMBIES.on_change(lambda engine, delta: self.zombies.labels(engine).inc(delta))

    def _engine(self, name: str) -> _Series:
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = _Series(
                self.in_flight.labels(name),
                self.ttfr.labels(name),
                self.duration.labels(name),
                self.items.labels(name),
                self.messages.labels(name),
            )
        return series

    def started(self, generation: Generation) -> None:
        """The ``on_started`` hook: one more generation in flight."""
        self._engine(generation.engine).in_flight.inc()

    def queued(self, generation: Generation) -> None:
        """The queue's ``on_queued`` hook: one more call waiting."""
        self.queue_depth.labels(generation.engine).inc()

    def left_queue(self, generation: Generation, cause: Cause | None) -> None:
        """The queue's ``on_left`` hook: a call left the queue, admitted (``cause`` None) or taken out."""
        self.queue_depth.labels(generation.engine).dec()
        self.queue_wait.labels(generation.engine).observe(generation.waited or 0.0)
        self.queue_exits.labels(generation.engine, cause.value if cause is not None else "admitted").inc()

    def finished(self, generation: Generation, code: Code) -> None:
        """The ``on_finished`` hook: record how ``generation`` ended, from its ending and the totals it carries."""
        series = self._engine(generation.engine)
        if generation.admitted_at is not None:  # a queued call that never ran was never counted in flight
            series.in_flight.dec()
        if generation.first_item_at is not None:
            series.ttfr.observe(generation.first_item_at - generation.started)
        ended = generation.ended if generation.ended is not None else time.monotonic()
        series.duration.observe(ended - generation.started)
        series.items.inc(generation.items)
        series.messages.inc(generation.messages)
        self.requests.labels(generation.engine, code.name).inc()
        ending = generation.ending
        if ending is not None and ending.how is How.MIGRATED:
            self.handoffs.labels(generation.engine).inc()
        elif ending is not None and ending.cause is not None and ending.how is not How.EXPIRED:
            # Counted once, by how it ended: a generation stopped and then killed is a kill.
            counter = self.kills if ending.how is How.KILLED else self.stops
            counter.labels(generation.engine, ending.cause.value).inc()

    def stalled(self, engine: str, seconds: float) -> None:
        """The loop watchdog's report (called from its thread)."""
        self.stalls.labels(engine).observe(seconds)

    def refused_call(self, engine: str, error: EngineError) -> None:
        """The ``on_refused`` hook: a call answered before any generation started."""
        code = error.code
        self.refused.labels(engine, code.name).inc()

    def serve(self, host: str, port: int) -> MetricsEndpoint:
        """Serve :attr:`registry` at ``http://host:port/metrics`` (``port`` 0: a free one)."""
        if self.registry is None:
            raise MetricsStartError("multiprocess metrics are served by the --workers supervisor, not by a worker")
        return MetricsEndpoint.start(self.registry, host, port)


class MetricsStartError(RuntimeError):
    """The metrics endpoint could not listen; the message is one line naming the address and why."""


class MetricsEndpoint:
    """``/metrics`` over HTTP, served from a thread of its own (prometheus-client's WSGI server)."""

    def __init__(self, server: WSGIServer, host: str) -> None:
        self._server = server
        self.port: int = server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/metrics"

    @classmethod
    def start(cls, registry: CollectorRegistry, host: str, port: int) -> MetricsEndpoint:
        """Listen on ``host:port`` (``0``: a free port); raise :class:`MetricsStartError` if it cannot."""
        try:
            server, _ = start_http_server(port, addr=host, registry=registry)
        except OSError as error:
            reason = error.strerror or str(error)
            raise MetricsStartError(f"cannot serve metrics on {host}:{port}: {reason} (--metrics-port)") from None
        endpoint = cls(server, host)
        log.info("metrics at %s", endpoint.url)
        return endpoint

    def close(self) -> None:
        """Stop serving and release the port (blocks for up to half a second: run it off the event loop)."""
        self._server.shutdown()
        self._server.server_close()
