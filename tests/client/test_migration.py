"""Migration in the client, against real in-process servers: a resumable stream whose server goes away continues
on the other one, every item once; everything else still fails loudly (tests/e2e/test_fleet_migration.py does the
same with real replicas, SIGKILL, SIGSTOP and SIGTERM)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from engine_runtime.client import EngineClient
from engine_runtime.client.migration import PLACEMENTS, Migrations
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server import (
    Code,
    Context,
    EngineError,
    FinishReason,
    ResourceExhausted,
    ResponseStream,
    Unavailable,
)
from engine_runtime.server.app import EngineServer
from tests.conftest import ServerFactory

Fault = Callable[[EngineServer], Awaitable[None]]


@pytest_asyncio.fixture
async def pair(make_server: ServerFactory) -> list[EngineServer]:
    """Two servers; a drain hands resumable streams off at once and stops the others 0.1 s later."""
    return [await make_server(drain_timeout=0, stop_timeout=0.1) for _ in range(2)]


@pytest_asyncio.fixture
async def client(pair: list[EngineServer]) -> AsyncIterator[EngineClient]:
    async with EngineClient([server.addresses[0] for server in pair], migration_limit=3) as client:
        yield client


def owner(pair: list[EngineServer], stream: ResponseStream[CountResponse]) -> EngineServer:
    """The server running the stream's generation now."""
    [server] = [server for server in pair if server.inflight.get(stream.context.id) is not None]
    return server


async def consume(stream: ResponseStream[CountResponse], at: int, fault: Callable[[], Awaitable[None]]) -> list[int]:
    """Every index the stream yields, with ``fault`` injected once ``at`` items have arrived."""
    indexes = []
    async for item in stream:
        indexes.append(item.index)
        if len(indexes) == at:
            await fault()
    return indexes


DRAINS: set[asyncio.Future[None]] = set()


async def drain(server: EngineServer) -> None:
    started = asyncio.ensure_future(server.drain())
    DRAINS.add(started)
    started.add_done_callback(DRAINS.discard)
    await asyncio.sleep(0)  # the drain has begun: its hand-off (drain timeout 0) is next


async def kill(server: EngineServer) -> None:
    await server.kill()


@pytest.mark.asyncio
@pytest.mark.parametrize("fault", [drain, kill], ids=["drained", "killed"])
async def test_a_resumable_stream_continues_on_the_other_server_every_item_once(
    pair: list[EngineServer], client: EngineClient, fault: Fault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "engine_runtime.client")
    count = (await client.get("count")).downcast(CountRequest, CountResponse)
    assert count is not None and (await client.get("count")).resumable
    stream = await count.generate(CountRequest(count=60, delay_s=0.005), Context("moving-1"))
    first = None

    async def inject() -> None:
        nonlocal first
        first = owner(pair, stream)
        await fault(first)

    indexes = await consume(stream, 10, inject)
    assert indexes == list(range(60)) and stream.finish_reason is FinishReason.COMPLETED
    assert client.migrations == 1
    [record] = [r for r in caplog.records if r.name == "engine_runtime.client"]
    assert "request moving-1" in record.getMessage() and "continuing on another replica" in record.getMessage()
    assert record.resume_from >= 10  # type: ignore[attr-defined]
    if fault is drain:
        assert "x-continue-elsewhere" in record.getMessage()


@pytest.mark.asyncio
async def test_a_stop_asked_before_the_move_is_sent_again_and_the_stream_ends_stopped(
    pair: list[EngineServer], client: EngineClient
) -> None:
    # `ticks` ignores stops, so the drain hands it off (at its stop timeout) while the stop is pending.
    ticks = (await client.get("ticks")).downcast(CountRequest, CountResponse)
    assert ticks is not None
    stream = await ticks.generate(CountRequest(count=80, delay_s=0.005))

    async def stop_then_drain() -> None:
        stream.context.stop_generating()
        await drain(owner(pair, stream))

    assert await consume(stream, 5, stop_then_drain) == list(range(80))
    assert stream.finish_reason is FinishReason.STOPPED and client.migrations == 1


@pytest.mark.asyncio
async def test_a_stream_that_is_not_resumable_raises_unavailable_and_never_looks_complete(
    pair: list[EngineServer], client: EngineClient
) -> None:
    probe = (await client.get("probe")).downcast(CountRequest, CountResponse)
    assert probe is not None and not (await client.get("probe")).resumable
    stream = await probe.generate(CountRequest(count=0, delay_s=0.005))
    with pytest.raises(Unavailable):
        await consume(stream, 5, lambda: kill(owner(pair, stream)))
    assert stream.finish_reason is None and client.migrations == 0


@pytest.mark.asyncio
async def test_past_the_migration_limit_the_stream_raises_unavailable(make_server: ServerFactory) -> None:
    servers = [await make_server() for _ in range(2)]
    async with EngineClient([s.addresses[0] for s in servers], migration_limit=1) as client:
        count = (await client.get("count")).downcast(CountRequest, CountResponse)
        assert count is not None
        stream = await count.generate(CountRequest(count=1000, delay_s=0.005))
        received: list[int] = []
        with pytest.raises(Unavailable):
            async for item in stream:
                received.append(item.index)
                if len(received) in (5, 10):  # the second death is one too many
                    await owner(servers, stream).kill()
        assert received == list(range(len(received))) and client.migrations == 1
        assert stream.finish_reason is None


@pytest.mark.asyncio
async def test_migration_limit_zero_never_migrates(pair: list[EngineServer]) -> None:
    async with EngineClient([s.addresses[0] for s in pair], migration_limit=0) as client:
        count = (await client.get("count")).downcast(CountRequest, CountResponse)
        assert count is not None
        stream = await count.generate(CountRequest(count=1000, delay_s=0.005))
        with pytest.raises(Unavailable):
            await consume(stream, 3, lambda: kill(owner(pair, stream)))
        assert client.migrations == 0
    with pytest.raises(ValueError, match="migration_limit"):
        EngineClient("127.0.0.1:1", migration_limit=-1)


@pytest.mark.asyncio
async def test_a_kill_by_the_consumer_never_migrates(pair: list[EngineServer], client: EngineClient) -> None:
    count = (await client.get("count")).downcast(CountRequest, CountResponse)
    assert count is not None
    stream = await count.generate(CountRequest(count=1000, delay_s=0.005))
    server = None
    async for item in stream:
        server = owner(pair, stream)
        if item.index == 3:
            stream.context.kill()
    assert server is not None and await server.inflight.wait_empty(5)
    assert client.migrations == 0 and stream.finish_reason is None
    assert all(len(s.inflight) == 0 for s in pair)


@pytest.mark.asyncio
async def test_a_consumer_resumes_its_own_stream_with_a_context_resume_from(client: EngineClient) -> None:
    count = (await client.get("count")).downcast(CountRequest, CountResponse)
    assert count is not None
    stream = await count.generate(CountRequest(count=8), Context(resume_from=5))
    assert [item.index async for item in stream] == [5, 6, 7]
    echo = (await client.get("echo")).downcast(EchoRequest, EchoResponse)
    assert echo is not None
    with pytest.raises(EngineError) as info:
        await anext(aiter(await echo.generate(EchoRequest(text="a b c"), Context(resume_from=2))))
    assert info.value.code is Code.FAILED_PRECONDITION and "engine 'echo' is not resumable" in info.value.message


def test_the_policy_counts_breaks_and_backs_off_refused_re_sends() -> None:
    policy = Migrations(2)
    broke, refused = Unavailable("the replica went away"), ResourceExhausted("full")
    assert policy.allows(broke, 0) and policy.allows(broke, 1) and not policy.allows(broke, 2)
    assert not policy.allows(EngineError(Code.INTERNAL, "a bug"), 0)  # only a broken call moves
    # A refused re-send waits for the replica's pushback, or backs off on its own, a bounded number of times.
    assert policy.retry_delay(refused, 0, "250") == 0.25
    assert policy.retry_delay(broke, 0, "-1") is None  # pushback < 0: do not retry
    assert [policy.retry_delay(broke, n, None) for n in range(3)] == [0.025, 0.05, 0.1]
    assert policy.retry_delay(broke, PLACEMENTS, None) is None
    assert policy.retry_delay(EngineError(Code.INVALID_ARGUMENT, "bad"), 0, None) is None
