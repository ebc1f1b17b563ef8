"""`resumable=True` and `ctx.resume_from` in the runtime, without a server: what an engine sees and what is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server import Code, Context, EngineError, EngineRegistry, FinishReason
from engine_runtime.server.examples import registry as examples


def test_resume_from_is_zero_for_a_fresh_start_and_never_negative() -> None:
    assert Context().resume_from == 0 and Context("r", resume_from=3).resume_from == 3
    with pytest.raises(ValueError, match="resume_from must be 0 or more"):
        Context(resume_from=-1)


def test_registration_records_the_promise() -> None:
    registry = EngineRegistry()

    @registry.engine("resumes", request=EchoRequest, response=EchoResponse, resumable=True)
    async def resumes(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
        yield EchoResponse()

    registry.register("plain", resumes, request=EchoRequest, response=EchoResponse)
    assert registry.get("resumes").resumable and not registry.get("plain").resumable
    assert examples.get("count").resumable and not examples.get("echo").resumable


@pytest.mark.asyncio
async def test_a_resumable_engine_sees_resume_from_and_count_continues_at_that_index() -> None:
    count = examples.get("count").downcast(CountRequest, CountResponse)
    assert count is not None
    stream = await count.generate(CountRequest(count=6), Context(resume_from=4))
    assert [item.index async for item in stream] == [4, 5]
    assert stream.finish_reason is FinishReason.COMPLETED


@pytest.mark.asyncio
async def test_an_engine_that_is_not_resumable_refuses_to_resume_naming_itself() -> None:
    echo = examples.get("echo").downcast(EchoRequest, EchoResponse)
    assert echo is not None
    with pytest.raises(EngineError) as info:
        await echo.generate(EchoRequest(text="a b"), Context(resume_from=1))
    assert info.value.code is Code.FAILED_PRECONDITION
    assert (
        info.value.message == "engine 'echo' is not resumable: it cannot continue after 1 items (resume_from must be 0)"
    )


@pytest.mark.asyncio
async def test_a_resumable_unary_engine_resumed_after_its_response_is_not_run_again() -> None:
    registry = EngineRegistry()
    runs: list[int] = []

    @registry.engine("once", request=EchoRequest, response=EchoResponse, resumable=True)
    def once(request: EchoRequest, ctx: Context) -> EchoResponse:
        runs.append(ctx.resume_from)
        return EchoResponse(text=request.text[::-1])

    engine = registry.get("once")
    assert [item.text async for item in await engine.generate(EchoRequest(text="ab"))] == ["ba"]
    resumed = await engine.generate(EchoRequest(text="ab"), Context(resume_from=1))
    assert [item async for item in resumed] == [] and resumed.finish_reason is FinishReason.COMPLETED
    assert runs == [0]


@pytest.mark.asyncio
async def test_an_engine_registered_again_keeps_the_promise_and_passes_resume_from_on() -> None:
    registry = EngineRegistry()
    count = examples.get("count").downcast(CountRequest, CountResponse)
    assert count is not None
    again = registry.register("count_again", count)
    assert again.resumable
    assert not registry.register("count_not", count, resumable=False).resumable
    stream = await again.generate(CountRequest(count=5), Context(resume_from=3))
    assert [item.index async for item in stream] == [3, 4]


@pytest.mark.asyncio
async def test_a_sync_resumable_engine_reads_resume_from_in_its_thread() -> None:
    registry = EngineRegistry()

    @registry.engine("rows", request=CountRequest, response=CountResponse, resumable=True)
    def rows(request: CountRequest, ctx: Context) -> Iterator[CountResponse]:
        for index in range(ctx.resume_from, request.count):
            yield CountResponse(index=index)

    stream = await registry.get("rows").generate(CountRequest(count=4), Context(resume_from=2))
    assert [item.index async for item in stream] == [2, 3]
