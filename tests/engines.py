"""Engines for the tests: the examples plus probes that report how they ended, and faulty ones.

Served in-process by the fixtures, and as a TARGET (`tests.engines:registry`) by the end-to-end tests, where
the unary `probe_report` engine tells another process how a probe generation ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

import grpc

from benchmarks.engines import exits, fails, leaks_cancel
from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.examples_pb2 import (
    CountError,
    CountRequest,
    CountResponse,
    EchoRequest,
    EchoResponse,
)
from engine_runtime.server import Context, EngineError, EngineRegistry
from engine_runtime.server.examples import registry as examples


class Probe:
    """How one `probe` generation went, seen from inside the engine."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.exit = "running"
        self.killed_in_finally: bool | None = None
        self.ended_at: float | None = None


PROBES: dict[str, Probe] = {}

registry = EngineRegistry()
registry.merge(examples)
# The misbehaving engines of the benchmark's hostile mix, one definition for both.
for _fn in (exits, fails, leaks_cancel):
    registry.register(_fn.__name__, _fn, request=EchoRequest, response=EchoResponse)


@registry.engine("probe", request=CountRequest, response=CountResponse)
async def probe(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
    """Streams `count` items `delay_s` apart (forever when count is 0) and records how it ended."""
    record = PROBES[ctx.id] = Probe()
    record.started.set()
    try:
        index = 0
        while not request.count or index < request.count:
            if ctx.is_stopped():
                record.exit = "stopped"
                return
            yield CountResponse(index=index, payload="x" * request.size)
            index += 1
            await asyncio.sleep(request.delay_s)
        record.exit = "completed"
    except asyncio.CancelledError:
        record.exit = "cancelled"
        raise
    except GeneratorExit:
        record.exit = "generator-exit"
        raise
    finally:
        record.killed_in_finally = ctx.is_killed()
        record.ended_at = time.monotonic()
        record.ended.set()


@registry.engine("relay", request=CountRequest, response=CountResponse)
async def relay(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
    """`probe` on the server at $RELAY_UPSTREAM, in a linked child context: a hop, as an engine makes one."""
    async with EngineClient(os.environ["RELAY_UPSTREAM"]) as client:
        upstream = (await client.get("probe")).downcast(CountRequest, CountResponse)
        assert upstream is not None
        async for item in await upstream.generate(request, ctx.child()):
            yield item


# The probe behind a concurrency limit of one: its calls queue (with --max-queue), and PROBES, in insertion order,
# is the order in which their engines started.
registry.register(
    "single", probe, request=CountRequest, response=CountResponse, max_concurrency=1, description="probe, one at a time"
)


@registry.engine("probes_started", request=EchoRequest, response=EchoResponse)
async def probes_started(request: EchoRequest, ctx: Context) -> EchoResponse:
    """Of the probe request ids in `text` (space-separated), those whose engine started, in the order they did."""
    wanted = set(request.text.split())
    return EchoResponse(text=" ".join(request_id for request_id in PROBES if request_id in wanted))


@registry.engine("probe_report", request=EchoRequest, response=EchoResponse)
async def probe_report(request: EchoRequest, ctx: Context) -> EchoResponse:
    """How the probe with request id `text` ended (waiting up to 10 s): `<exit> killed=<bool>`, or `unknown`."""
    record = PROBES.get(request.text)
    if record is None:
        return EchoResponse(text="unknown")
    # A probe killed a moment ago may still be unwinding: wait for its `finally`, within a bound.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(record.ended.wait(), 10)
    return EchoResponse(text=f"{record.exit} killed={record.killed_in_finally}")


@registry.engine("wrong_type", request=EchoRequest, response=EchoResponse)
async def wrong_type(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Yields a CountResponse where it promised EchoResponse."""
    yield CountResponse(index=1)  # type: ignore[misc]


@registry.engine("typed_error", request=EchoRequest, response=EchoResponse, error=CountError)
async def typed_error(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Fails with FAILED_PRECONDITION and a CountError detail."""
    # Written as a gRPC user writes it: with grpc's own StatusCode.
    raise EngineError(
        grpc.StatusCode.FAILED_PRECONDITION, "not ready: " + request.text, CountError(field="text", value=7)
    )
    yield EchoResponse()


@registry.engine("suicide", request=EchoRequest, response=EchoResponse)
async def suicide(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Yields one item and kills its own context."""
    yield EchoResponse(text="last words")
    ctx.kill()
    await asyncio.sleep(60)
    yield EchoResponse(text="never")


@registry.engine("stubborn", request=EchoRequest, response=EchoResponse)
async def stubborn(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Ignores stop: streams a tick every 10 ms until killed."""
    while True:
        yield EchoResponse(text="tick")
        await asyncio.sleep(0.01)


@registry.engine("ticks", request=CountRequest, response=CountResponse, resumable=True)
async def ticks(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
    """Resumable, and ignores stop: index `ctx.resume_from` on, `delay_s` apart, up to `count` (0: forever);
    each payload is the id of the process serving it (which replica of a fleet)."""
    index = ctx.resume_from
    while not request.count or index < request.count:
        yield CountResponse(index=index, payload=str(os.getpid()))
        index += 1
        await asyncio.sleep(request.delay_s)


@registry.engine("hangs", request=EchoRequest, response=EchoResponse)
async def hangs(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Never yields and never checks its context: only a kill ends it."""
    await asyncio.Event().wait()
    yield EchoResponse()


@registry.engine("pid", request=EchoRequest, response=EchoResponse)
async def pid(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Yields the id of the process serving it, then each word of `text`, `delay_s` apart (for --workers)."""
    yield EchoResponse(text=str(os.getpid()))
    for word in request.text.split():
        await asyncio.sleep(request.delay_s)
        if ctx.is_stopped():
            return
        yield EchoResponse(text=word)


@registry.engine("swallows_kill", request=CountRequest, response=CountResponse)
async def swallows_kill(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
    """Yields one item, then swallows the first `count` cancellations (0: every one) and ends at the next."""
    record = PROBES[ctx.id] = Probe()
    yield CountResponse(index=0)
    ignored = 0
    try:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                ignored += 1
                if request.count and ignored > request.count:
                    record.exit = f"cancelled after ignoring {ignored - 1}"
                    raise
    finally:
        record.killed_in_finally = ctx.is_killed()
        record.ended.set()


@registry.engine("blocks_loop", request=EchoRequest, response=EchoResponse)
async def blocks_loop(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Calls blocking code inside `async def` (the mistake the loop watchdog reports): sleeps 0.5 s, once."""
    time.sleep(0.5)  # noqa: ASYNC251  (the point of this engine)
    yield EchoResponse(text="late")


@registry.engine("fails_with", request=EchoRequest, response=EchoResponse)
async def fails_with(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Fails at once, having produced nothing, with the status `text` names (UNAVAILABLE, RESOURCE_EXHAUSTED...)."""
    raise EngineError(request.text, f"failing with {request.text} on purpose")
    yield EchoResponse()
