"""OpenTelemetry tracing of generations (SPEC section 11): one span per generation on each side of every hop.

Tracing is off unless the ``otel`` extra is installed (``pip install 'engine-runtime[otel]'``) and
``OTEL_TRACES_EXPORTER`` names an exporter; :func:`configure_from_environment` decides that once, when
``engine-server``, ``engine-client`` or an :class:`~engine_runtime.client.EngineClient` starts, and builds the
SDK from its standard environment variables with the SDK's own configurator (exporters, endpoint, protocol,
service name, sampler, propagators). Off, the only cost is reading ``SWITCH.on`` once per call: nothing is
imported, no span is made, and nothing here ever runs per item.

On, the server's span (``engine.generate <engine>``, SERVER) takes its parent from the call's W3C
``traceparent``/``tracestate`` and is made current in the call's task before the engine's task starts, so an
engine's remote calls (through ``ctx.child()``) are its children. The client's span (CLIENT) is injected into
each call it makes. Both carry ``engine.name``, ``engine.request_id``, ``engine.items``, ``engine.finish_reason``
and ``engine.cause``, and the events ``engine.stop`` and ``engine.kill`` when those happen. gRPC's edges pass
metadata in as plain ``(key, value)`` pairs: nothing here imports grpc.

Example (a program of one's own, e.g. a test with an in-memory exporter)::

    from opentelemetry.sdk.trace import TracerProvider
    tracing.enable(TracerProvider())     # or set OTEL_TRACES_EXPORTER=otlp and let engine-server configure it
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, TracerProvider

    from engine_runtime.generated.engine.v1.engine_pb2 import GenerateRequest

    from .errors import Code, EngineError
    from .inflight import Generation
    from .service import EngineService

__all__ = [
    "SWITCH",
    "ClientSpan",
    "ServerTracing",
    "TracingError",
    "client_span",
    "configure_from_environment",
    "disable",
    "enable",
    "shutdown",
]

log = logging.getLogger("engine_runtime.server")


class _Switch:
    """Whether generations are traced (decided once at start), and with which tracer."""

    __slots__ = ("configured", "on", "tracer")

    def __init__(self) -> None:
        self.on = False
        self.tracer: Any = None
        self.configured: bool | None = None


SWITCH = _Switch()
"""``SWITCH.on``: the one thing the service and the client read per call (never per item)."""
# The span of the call being admitted, in that call's own task, between `on_call` and `on_started`/`on_refused`.
_admitting: contextvars.ContextVar[Span | None] = contextvars.ContextVar("engine_runtime_admitting", default=None)


class TracingError(RuntimeError):
    """The OTEL_* variables ask for tracing the SDK cannot set up; the message is one line naming why."""


def configure_from_environment() -> bool:
    """Turn tracing on when ``OTEL_TRACES_EXPORTER`` names an exporter; once per process, then cached.

    The SDK is built by its own configurator from the standard variables, unless the program (or
    ``opentelemetry-instrument``) already set a tracer provider, which is then used as it is. Without the
    ``otel`` extra a warning says how to install it and tracing stays off. Raises :class:`TracingError` when the
    variables name what the SDK cannot set up (an unknown exporter, an unsupported protocol).
    """
    if SWITCH.configured is not None:
        return SWITCH.configured
    SWITCH.configured = False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not exporter or exporter == "none":
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk._configuration import _OTelSDKConfigurator
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    except ImportError:
        log.warning("OTEL_TRACES_EXPORTER is set but the otel extra is not: pip install 'engine-runtime[otel]'")
        return False
    if not isinstance(trace.get_tracer_provider(), SdkTracerProvider):
        try:
            _OTelSDKConfigurator().configure()  # type: ignore[no-untyped-call]
        except Exception as error:  # the SDK raises RuntimeError, ValueError, ... for a bad variable
            raise TracingError(f"cannot set up tracing from the OTEL_* variables: {error}") from None
    enable()
    SWITCH.configured = True
    return True


def enable(provider: TracerProvider | None = None) -> None:
    """Trace generations with ``provider`` (default: the global tracer provider)."""
    from opentelemetry import trace

    from engine_runtime import __version__

    SWITCH.tracer = trace.get_tracer("engine_runtime", __version__, tracer_provider=provider)
    SWITCH.on = True


def disable() -> None:
    """Stop tracing new generations (those in flight end their spans as usual)."""
    SWITCH.on = False


def shutdown() -> None:
    """Export what is buffered and stop the exporters (blocks for up to the SDK's export timeout)."""
    if not SWITCH.configured:
        return
    from opentelemetry import trace

    provider: Any = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def _engine_attributes(engine: str, request_id: str) -> dict[str, Any]:
    return {"engine.name": engine, "engine.request_id": request_id, "rpc.system": "grpc"}


class _Events:
    """Linked under a generation's context: its stop and kill become the span's events (each once)."""

    __slots__ = ("causes", "killed", "span", "stopped")

    def __init__(self, span: Span, causes: Generation | None) -> None:
        self.span = span
        self.causes = causes
        self.stopped = False
        self.killed = False

    def stop_generating(self) -> None:
        if not self.stopped and not self.killed:
            self.stopped = True
            cause = self.causes.stop_cause if self.causes is not None else None
            self.span.add_event("engine.stop", {"engine.cause": cause.value} if cause is not None else None)

    stop = stop_generating

    def kill(self) -> None:
        if not self.killed:
            self.killed = True
            cause = self.causes.kill_cause if self.causes is not None else None
            self.span.add_event("engine.kill", {"engine.cause": cause.value} if cause is not None else None)

    def is_stopped(self) -> bool:
        return self.stopped or self.killed

    def is_killed(self) -> bool:
        return self.killed


class ServerTracing:
    """The server's side: a SERVER span per generation, fed by the service's call, start and finish hooks.

    Example::

        if tracing.configure_from_environment():
            ServerTracing().attach(server.service)
    """

    def __init__(self) -> None:
        self._spans: dict[Generation, Span] = {}

    def attach(self, service: EngineService) -> None:
        service.on_call(self.called)
        service.on_started(self.started)
        service.on_refused(self.refused)
        service.on_finished(self.finished)

    def called(self, metadata: Sequence[tuple[str, str | bytes]], request: GenerateRequest) -> None:
        """``on_call``, in the call's task: start its span, with the caller's trace as parent, and make it current.

        Current here means current in the engine's task too: asyncio copies the context into the task it creates.
        """
        if not SWITCH.on:
            return
        from opentelemetry import context, propagate, trace

        parent = propagate.extract({key: value for key, value in metadata if isinstance(value, str)})
        span = SWITCH.tracer.start_span(
            f"engine.generate {request.engine}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes=_engine_attributes(request.engine, request.request_id),
        )
        context.attach(trace.set_span_in_context(span, parent))
        _admitting.set(span)

    def started(self, generation: Generation) -> None:
        span = _admitting.get()
        if span is None:
            return
        _admitting.set(None)
        span.set_attribute("engine.request_id", generation.id)
        generation.context.link_child(_Events(span, generation))
        self._spans[generation] = span

    def refused(self, engine: str, error: EngineError) -> None:
        span = _admitting.get()
        if span is not None:
            _admitting.set(None)
            _end(span, error.code, error.message)

    def finished(self, generation: Generation, code: Code) -> None:
        span = self._spans.pop(generation, None)
        if span is None:
            return
        ending = generation.ending
        span.set_attribute("engine.items", generation.items)
        if ending is not None:
            span.set_attribute("engine.finish_reason", ending.how.value)
            if ending.cause is not None:
                span.set_attribute("engine.cause", ending.cause.value)
        _end(span, code, ending.error.message if ending is not None and ending.error is not None else None)


def _end(span: Span, code: Code, message: str | None) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("rpc.grpc.status_code", int(code))
    if code:
        span.set_status(Status(StatusCode.ERROR, message or code.name))
    span.end()


class ClientSpan:
    """The client's side of one remote generation: a CLIENT span and the metadata that carries it."""

    __slots__ = ("ended", "events", "headers", "items", "span")

    def __init__(self, span: Span, headers: tuple[tuple[str, str], ...]) -> None:
        self.span = span
        self.headers = headers
        self.items = 0
        self.ended = False
        self.events = _Events(span, None)

    def end(self, finish: str | None, error: EngineError | None) -> None:
        """Record how the generation ended on this side, once."""
        if self.ended:
            return
        self.ended = True
        span = self.span
        span.set_attribute("engine.items", self.items)
        cause: str | None
        if self.events.killed:
            reason, cause = "killed", "client_cancel"
        elif error is not None:
            reason = "failed"
            cause = "deadline" if error.code.name == "DEADLINE_EXCEEDED" else None
        else:
            reason = finish or "completed"
            cause = "stop_request" if self.events.stopped else None
        span.set_attribute("engine.finish_reason", reason)
        if cause is not None:
            span.set_attribute("engine.cause", cause)
        if error is not None:
            _end(span, error.code, error.message)
        else:
            span.end()


def client_span(engine: str, request_id: str) -> ClientSpan:
    """Start the CLIENT span of a remote generation, child of the current span (call only when ``SWITCH.on``)."""
    from opentelemetry import propagate, trace

    span = SWITCH.tracer.start_span(
        f"engine.generate {engine}", kind=trace.SpanKind.CLIENT, attributes=_engine_attributes(engine, request_id)
    )
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return ClientSpan(span, tuple(carrier.items()))
