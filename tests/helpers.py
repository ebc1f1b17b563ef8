"""Helpers for the service tests: encode a request, collect a stream, read a status, scrape metrics."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg

# Channels to one target share their connections (grpc's global subchannel pool) unless told not to.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def generate_request(engine: str, message: Message, request_id: str = "", priority: int = 0) -> pb.GenerateRequest:
    return pb.GenerateRequest(engine=engine, request=pack(message), request_id=request_id, priority=priority)


@dataclass
class Outcome:
    items: list[Any] = field(default_factory=list)
    messages: int = 0
    finish_reason: int = 0
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    request_id: str = ""
    trailing: Any = None
    reasons: list[int] = field(default_factory=list)


async def collect(
    stub: pbg.EngineServiceAsyncStub,
    engine: str,
    message: Message,
    response: type[Message],
    *,
    request_id: str = "",
    timeout: float | None = 30,
    metadata: Any = None,
) -> Outcome:
    """Run one Generate call to its end and report everything observed."""
    out = Outcome()
    call = stub.Generate(generate_request(engine, message, request_id), timeout=timeout, metadata=metadata)
    try:
        async for reply in call:
            out.messages += 1
            out.reasons.append(reply.finish_reason)
            out.finish_reason = reply.finish_reason
            out.items.extend(response.FromString(item.value) for item in reply.items)
    except grpc.aio.AioRpcError as error:
        out.code, out.details = error.code(), error.details() or ""
        out.trailing = error.trailing_metadata()
    md = await call.initial_metadata()
    out.request_id = str(dict(md or ()).get("x-request-id", ""))
    return out


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch_metrics(url: str) -> Samples:
    """Scrape a Prometheus endpoint once: every sample, by name and labels (blocking: run it in a thread)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels, 0 when absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def stop_request(call: Any, *, kill: bool = False) -> pb.StopRequest:
    """A `Stop` for the generation of ``call``, with the id and the `x-stop-key` of its initial metadata."""
    metadata = dict(await call.initial_metadata() or ())
    return pb.StopRequest(request_id=metadata["x-request-id"], stop_key=metadata["x-stop-key"], kill=kill)


async def first_reply(call: Any) -> pb.GenerateResponse:
    """The next message of a call read with read(); it must not be the end."""
    reply = await call.read()
    assert reply is not grpc.aio.EOF
    return reply  # type: ignore[no-any-return]


async def rest(call: Any) -> list[pb.GenerateResponse]:
    """Read a call whose first message was taken with read() to its end (the two styles may not mix)."""
    replies = []
    while (reply := await call.read()) is not grpc.aio.EOF:
        replies.append(reply)
    return replies


async def start_session(channel: grpc.aio.Channel, engine: str, message: Message, request_id: str) -> Any:
    """Open a Session, send its `start`, and wait for the first message."""
    call = pbg.EngineServiceStub(channel).Session()
    await call.write(pb.SessionRequest(start=generate_request(engine, message, request_id)))
    await first_reply(call)
    return call


async def wait_not_serving(channel: grpc.aio.Channel, service: str = "", timeout: float = 10) -> None:
    """Watch ``grpc.health.v1`` on ``channel`` until ``service`` is NOT_SERVING (a drain has begun)."""
    stub: Any = health_pb2_grpc.HealthStub(channel)
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    try:
        while (reply := await watch.read()) is not grpc.aio.EOF:
            if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                return
    finally:
        watch.cancel()
    raise AssertionError(f"health of {service!r} ended without NOT_SERVING")
