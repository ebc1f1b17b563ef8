"""Tracing through the real OTLP/gRPC exporter, configured by docs/operations.md's variables on real `engine-server`s.

The receiver is built here from the opentelemetry-proto package: its ``TraceService`` on a loopback grpc server
(port 0). Server 2 serves `probe`; server 1's `relay` streams it; this process's client exports to the same
receiver with the SDK's OTLP exporter. The four spans of the hop must arrive with their attributes and events.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse
from engine_runtime.server import Context, tracing
from engine_runtime.server.stream import FinishReason
from tests.processes import BIN, ROOT, ServerProcess
from tests.tracing.spans import REQUEST, Seen, check_hop, drain, first_items, wait_for


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver that keeps every span it is sent, with its service's name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        self._lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    self.spans.extend((attributes.get("service.name", ""), span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def seen(self) -> list[Seen]:
        with self._lock:
            return [_seen(span) for _, span in self.spans]

    def services(self) -> set[str]:
        with self._lock:
            return {service for service, _ in self.spans}


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


def _seen(span: Span) -> Seen:
    return Seen(
        name=span.name,
        kind="client" if span.kind == Span.SPAN_KIND_CLIENT else "server",
        trace_id=int.from_bytes(span.trace_id, "big"),
        span_id=int.from_bytes(span.span_id, "big"),
        parent_id=int.from_bytes(span.parent_span_id, "big") if span.parent_span_id else None,
        attributes={a.key: _value(a.value) for a in span.attributes},
        events={e.name: {a.key: _value(a.value) for a in e.attributes} for e in span.events},
    )


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield receiver, f"127.0.0.1:{port}"
    server.stop(None)


OPERATIONS = (ROOT / "docs" / "operations.md").read_text()
(DOCUMENTED,) = [b for b in re.findall(r"```sh\n(.*?)```", OPERATIONS, flags=re.S) if "OTEL_TRACES_EXPORTER" in b]


def documented_env() -> dict[str, str]:
    """The OTEL_* variables of docs/operations.md's tracing command, as written there."""
    return dict(re.findall(r"\b(OTEL_\w+)=(\S+)", DOCUMENTED))


def otel_env(endpoint: str, service: str, protocol: str = "grpc") -> dict[str, str]:
    """The documented variables, pointed at the receiver here, with a short batch delay so the test is quick."""
    documented = documented_env()
    documented["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{endpoint}"
    documented["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    return {**documented, "OTEL_SERVICE_NAME": service, "OTEL_BSP_SCHEDULE_DELAY": "50"}


@pytest.fixture
def http_receiver() -> Iterator[tuple[Receiver, str]]:
    """The same receiver behind OTLP/HTTP: POST /v1/traces with an ExportTraceServiceRequest (protobuf)."""
    receiver = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            reply = receiver.Export(request, None).SerializeToString()
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the test's output stays the test's

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_documented_collector_takes_what_the_documented_command_sends() -> None:
    """The Collector is a Go binary the tests do not run: its documented configuration is checked for consistency."""
    (block,) = re.findall(r"```yaml\n(.*?)```", OPERATIONS, flags=re.S)
    config = yaml.safe_load(block)
    pipeline = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(config[kind]), kind
    endpoint = documented_env()["OTEL_EXPORTER_OTLP_ENDPOINT"]
    grpc_port = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1]
    assert endpoint.rsplit(":", 1)[1] == grpc_port
    assert documented_env()["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"


@pytest.mark.asyncio
async def test_a_hop_reaches_an_otlp_receiver(
    start_server: type[ServerProcess], receiver: tuple[Receiver, str]
) -> None:
    spans, endpoint = receiver
    target = "tests.engines:registry"
    upstream = start_server(target, "--host", "127.0.0.2", "--port", "0", env=otel_env(endpoint, "engine-2"))
    front = start_server(
        target,
        "--host",
        "127.0.0.3",
        "--port",
        "0",
        env={**otel_env(endpoint, "engine-1"), "RELAY_UPSTREAM": upstream.wait_listening()},
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracing.enable(provider)
    try:
        async with EngineClient(front.wait_listening()) as client:
            relay = (await client.get("relay")).downcast(CountRequest, CountResponse)
            assert relay is not None
            stream = await relay.generate(REQUEST, Context("otlp-hop"))
            assert await first_items(stream, 3) >= 3
            stream.context.stop_generating()
            assert await drain(stream) is FinishReason.STOPPED
    finally:
        tracing.disable()
        provider.shutdown()
    hop = check_hop(await wait_for(spans.seen, 4), "otlp-hop")
    for key, span in hop.items():
        assert "engine.stop" in span.events, key
        assert span.attributes["engine.finish_reason"] == "stopped", key
        assert span.attributes["engine.items"] >= 3, key
    assert hop["server probe"].attributes["engine.cause"] == "stop_request"
    assert {"engine-1", "engine-2"} <= spans.services()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_engine_client_exports_its_span_and_the_server_its_child(
    start_server: type[ServerProcess], request: pytest.FixtureRequest, protocol: str
) -> None:
    spans, endpoint = request.getfixturevalue("receiver" if protocol == "grpc" else "http_receiver")
    address = start_server("--port", "0", env=otel_env(endpoint, "engine-server", protocol)).wait_listening()
    done = subprocess.run(
        [str(BIN / "engine-client"), "--target", address, "generate", "echo", '{"text": "a b"}', "--request-id", "cli"],
        env={**os.environ, **otel_env(endpoint, "engine-client", protocol)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = asyncio.run(wait_for(spans.seen, 2))
    client, server = sorted((s for s in seen if s.attributes["engine.request_id"] == "cli"), key=lambda s: s.kind)
    assert (client.kind, server.kind) == ("client", "server")
    assert server.parent_id == client.span_id and server.trace_id == client.trace_id
    assert client.attributes["engine.items"] == server.attributes["engine.items"] == 2
    assert {"engine-client", "engine-server"} <= spans.services()


def test_a_bad_variable_stops_the_start_with_one_line(start_server: type[ServerProcess]) -> None:
    server = start_server("--port", "0", env={"OTEL_TRACES_EXPORTER": "no-such-exporter"})
    assert server.wait() == 1
    assert "cannot set up tracing from the OTEL_* variables" in server.output
    assert "no-such-exporter" in server.output and "Traceback" not in server.output, server.output
