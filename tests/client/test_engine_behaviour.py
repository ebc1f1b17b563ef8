"""One behavioural suite, two backends: a local engine and the same engine behind a real server.

A remote engine must behave exactly like a local one (docs/client.md): same items, same finish reasons, same
errors, same stop and kill semantics.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import pytest_asyncio

from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.examples_pb2 import (
    CountError,
    CountRequest,
    CountResponse,
    EchoRequest,
    EchoResponse,
)
from engine_runtime.server import (
    Aborted,
    AnyEngine,
    Code,
    Context,
    EngineError,
    EngineFailed,
    EngineNotFound,
    FinishReason,
    InvalidRequest,
)
from engine_runtime.server.app import EngineServer, ServerConfig
from tests.engines import PROBES, registry

pytestmark = pytest.mark.asyncio

GetEngine = Callable[[str], Awaitable[AnyEngine]]


@pytest_asyncio.fixture(params=["local", "remote"])
async def get_engine(request: pytest.FixtureRequest) -> AsyncIterator[GetEngine]:
    if request.param == "local":

        async def local(name: str) -> AnyEngine:
            return registry.get(name)

        yield local
        return
    async with EngineServer(registry, ServerConfig(port=0)) as server, EngineClient(server.addresses[0]) as client:
        yield client.get


async def probe_ended(request_id: str) -> str:
    probe = PROBES[request_id]
    await asyncio.wait_for(probe.ended.wait(), 10)
    return f"{probe.exit} killed={probe.killed_in_finally}"


async def test_items_arrive_in_order_and_complete(get_engine: GetEngine) -> None:
    echo = (await get_engine("echo")).downcast(EchoRequest, EchoResponse)
    assert echo is not None
    stream = await echo.generate(EchoRequest(text="one two three"))
    assert [item.text async for item in stream] == ["one", "two", "three"]
    assert stream.finish_reason is FinishReason.COMPLETED


async def test_type_ids_and_downcasts(get_engine: GetEngine) -> None:
    count = await get_engine("count")
    assert (count.request_type, count.response_type, count.error_type) == (
        "examples.v1.CountRequest",
        "examples.v1.CountResponse",
        "examples.v1.CountError",
    )
    assert count.downcast(CountRequest, CountResponse, CountError) is not None
    assert count.downcast(EchoRequest, CountResponse) is None
    assert count.downcast(CountRequest, EchoResponse) is None
    assert count.downcast(CountRequest, CountResponse, EchoResponse) is None
    assert (await get_engine("reverse")).unary is True


async def test_unknown_engine(get_engine: GetEngine) -> None:
    with pytest.raises(EngineNotFound, match="'nope'.*echo"):
        await get_engine("nope")


async def test_many_fast_items(get_engine: GetEngine) -> None:
    count = (await get_engine("count")).downcast(CountRequest, CountResponse)
    assert count is not None
    stream = await count.generate(CountRequest(count=5000, size=8))
    items = [item async for item in stream]
    assert [i.index for i in items] == list(range(5000)) and items[0].payload == "x" * 8


async def test_stop_finishes_with_stopped_and_keeps_items(get_engine: GetEngine) -> None:
    probe = (await get_engine("probe")).downcast(CountRequest, CountResponse)
    assert probe is not None
    ctx = Context()
    stream = await probe.generate(CountRequest(delay_s=0.01), ctx)
    got = []
    async for item in stream:
        got.append(item.index)
        if len(got) == 3:
            stream.context.stop_generating()
    assert got[:3] == [0, 1, 2] and got == list(range(len(got)))
    assert stream.finish_reason is FinishReason.STOPPED
    assert await probe_ended(ctx.id) == "stopped killed=False"


async def test_consumer_kill_ends_quietly_and_kills_the_engine(get_engine: GetEngine) -> None:
    probe = (await get_engine("probe")).downcast(CountRequest, CountResponse)
    assert probe is not None
    stream = await probe.generate(CountRequest(delay_s=0.01))
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 2:
            stream.context.kill()
    assert seen == 2 and stream.finish_reason is None
    assert (await probe_ended(stream.context.id)).endswith("killed=True")


async def test_ancestor_kill_ends_quietly(get_engine: GetEngine) -> None:
    probe = (await get_engine("probe")).downcast(CountRequest, CountResponse)
    assert probe is not None
    root = Context()
    stream = await probe.generate(CountRequest(delay_s=0.01), root.child())
    async for _ in stream:
        root.kill()
    assert (await probe_ended(stream.context.id)).endswith("killed=True")


@pytest.mark.parametrize("how", ["break", "exception", "aclose", "drop"])
async def test_leaving_early_kills_the_engine(get_engine: GetEngine, how: str) -> None:
    probe = (await get_engine("probe")).downcast(CountRequest, CountResponse)
    assert probe is not None
    ctx = Context()
    stream = await probe.generate(CountRequest(delay_s=0.01), ctx)
    if how == "break":
        async for _ in stream:
            break
    elif how == "exception":
        with pytest.raises(ZeroDivisionError):
            async for _ in stream:
                raise ZeroDivisionError
    elif how == "aclose":
        await stream.next_batch()
        await stream.aclose()
    else:
        await stream.next_batch()
        del stream
        gc.collect()
    assert (await probe_ended(ctx.id)).endswith("killed=True")


async def test_engine_error_code_message_and_typed_detail(get_engine: GetEngine) -> None:
    count = (await get_engine("count")).downcast(CountRequest, CountResponse)
    assert count is not None
    stream = await count.generate(CountRequest(count=-1))
    with pytest.raises(EngineError) as info:
        await stream.next_batch()
    assert info.value.code is Code.INVALID_ARGUMENT and "count must be between" in info.value.message
    assert info.value.detail == CountError(field="count", value=-1, limit=100_000_000)


async def test_an_engine_error_code_compares_equal_to_grpcs_own(get_engine: GetEngine) -> None:
    typed = (await get_engine("typed_error")).downcast(EchoRequest, EchoResponse)
    assert typed is not None
    stream = await typed.generate(EchoRequest(text="x"))
    with pytest.raises(EngineError) as info:
        await stream.next_batch()
    code = info.value.code
    assert code == grpc.StatusCode.FAILED_PRECONDITION and code == grpc.StatusCode.FAILED_PRECONDITION
    assert code == 9 and code != grpc.StatusCode.INTERNAL and code is Code.FAILED_PRECONDITION
    assert info.value.detail == CountError(field="text", value=7)


async def test_engine_failure_is_internal(get_engine: GetEngine) -> None:
    fails = (await get_engine("fails")).downcast(EchoRequest, EchoResponse)
    assert fails is not None
    stream = await fails.generate(EchoRequest())
    got = []
    with pytest.raises(EngineFailed, match="'fails'"):
        async for item in stream:
            got.append(item.text)
    assert got == ["before"]


async def test_engine_killing_itself_raises_aborted(get_engine: GetEngine) -> None:
    suicide = (await get_engine("suicide")).downcast(EchoRequest, EchoResponse)
    assert suicide is not None
    stream = await suicide.generate(EchoRequest())
    with pytest.raises(Aborted):
        async for _ in stream:
            pass


async def test_a_request_of_the_wrong_type_is_refused(get_engine: GetEngine) -> None:
    echo = await get_engine("echo")
    with pytest.raises(InvalidRequest, match="examples.v1.EchoRequest.*examples.v1.CountRequest"):
        await echo.generate(CountRequest())


async def test_unary_engine(get_engine: GetEngine) -> None:
    reverse = (await get_engine("reverse")).downcast(EchoRequest, EchoResponse)
    assert reverse is not None
    stream = await reverse.generate(EchoRequest(text="abc"))
    assert [item.text async for item in stream] == ["cba"]
    assert stream.finish_reason is FinishReason.COMPLETED


async def test_nested_engine_stop_reaches_the_inner_one(get_engine: GetEngine) -> None:
    shout = (await get_engine("shout")).downcast(EchoRequest, EchoResponse)
    assert shout is not None
    stream = await shout.generate(EchoRequest(text=" ".join(["w"] * 500), delay_s=0.005))
    got = []
    async for item in stream:
        got.append(item.text)
        if len(got) == 2:
            stream.context.stop()
    assert got[:2] == ["W", "W"] and len(got) < 500
    assert stream.finish_reason is FinishReason.STOPPED
