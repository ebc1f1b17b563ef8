"""One trace across a hop, in memory: a client, server 1's relay engine, its remote call, server 2's probe.

Two real servers on loopback in this process and a real client; the spans go to the SDK's in-memory exporter.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse
from engine_runtime.server import Context, tracing
from engine_runtime.server.stream import FinishReason, ResponseStream
from tests.conftest import ServerFactory
from tests.tracing.spans import REQUEST, Seen, check_hop, drain, first_items, wait_for

pytestmark = pytest.mark.asyncio


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    yield exporter
    tracing.disable()
    provider.shutdown()


def seen(span: ReadableSpan) -> Seen:
    assert span.context is not None
    return Seen(
        name=span.name,
        kind="client" if span.kind is SpanKind.CLIENT else "server",
        trace_id=span.context.trace_id,
        span_id=span.context.span_id,
        parent_id=span.parent.span_id if span.parent is not None else None,
        attributes=dict(span.attributes or {}),
        events={event.name: dict(event.attributes or {}) for event in span.events},
    )


@contextlib.asynccontextmanager
async def relayed(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch, request_id: str
) -> AsyncIterator[ResponseStream[CountResponse]]:
    """A client's stream of server 1's `relay`, which streams server 2's `probe`; three items have arrived."""
    upstream = await make_server(host="127.0.0.2")
    monkeypatch.setenv("RELAY_UPSTREAM", upstream.addresses[0])
    front = await make_server(host="127.0.0.3")
    async with EngineClient(front.addresses[0]) as client:
        relay = (await client.get("relay")).downcast(CountRequest, CountResponse)
        assert relay is not None
        stream = await relay.generate(REQUEST, Context(request_id))
        assert await first_items(stream, 3) >= 3
        yield stream


async def test_a_stop_is_one_trace_with_stop_events_on_both_sides(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter
) -> None:
    async with relayed(make_server, monkeypatch, "trace-stop") as stream:
        stream.context.stop_generating()
        assert await drain(stream) is FinishReason.STOPPED
    spans = check_hop([seen(s) for s in await wait_for(exporter.get_finished_spans, 4)], "trace-stop")
    for key, span in spans.items():
        assert "engine.stop" in span.events, key
        assert "engine.kill" not in span.events, key
        assert span.attributes["engine.finish_reason"] == "stopped", key
        assert span.attributes["engine.items"] >= 3, key
    # The server's stops came in-band, from the client's side of the call.
    assert spans["server relay"].attributes["engine.cause"] == "stop_request"
    assert spans["server probe"].events["engine.stop"] == {"engine.cause": "stop_request"}
    assert spans["client relay"].attributes["engine.cause"] == "stop_request"


async def test_a_kill_is_one_trace_with_kill_events_on_both_sides(
    make_server: ServerFactory, monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter
) -> None:
    async with relayed(make_server, monkeypatch, "trace-kill") as stream:
        stream.context.kill()
        assert await drain(stream) is None
    spans = check_hop([seen(s) for s in await wait_for(exporter.get_finished_spans, 4)], "trace-kill")
    for key, span in spans.items():
        assert "engine.kill" in span.events, key
        assert span.attributes["engine.finish_reason"] == "killed", key
    for key in ("server relay", "server probe"):
        assert spans[key].attributes["engine.cause"] == "client_cancel"
        assert spans[key].events["engine.kill"] == {"engine.cause": "client_cancel"}
        assert spans[key].attributes["rpc.grpc.status_code"] == 1  # CANCELLED


async def test_a_refused_call_has_an_error_span(make_server: ServerFactory, exporter: InMemorySpanExporter) -> None:
    server = await make_server()
    async with EngineClient(server.addresses[0]) as client:
        probe = (await client.get("probe")).downcast(CountRequest, CountResponse)
        assert probe is not None
        first = await probe.generate(REQUEST, Context("twice"))
        second = await probe.generate(REQUEST, Context("twice"))
        error = await drain(second)
        first.context.kill()
        await drain(first)
    assert error is not None
    spans = [seen(s) for s in await wait_for(exporter.get_finished_spans, 4)]
    refused = [s for s in spans if s.kind == "server" and s.attributes.get("rpc.grpc.status_code") == 6]
    assert len(refused) == 1  # ALREADY_EXISTS, with no generation behind it
    assert "engine.items" not in refused[0].attributes


async def test_off_without_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert not tracing.SWITCH.on
    assert tracing.configure_from_environment() is False
    assert not tracing.SWITCH.on
