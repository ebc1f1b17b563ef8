"""The context's rules (docs/concepts.md) as an engine and a consumer see them, on local streams."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server import Aborted, Code, Context, EngineError, EngineFailed, EngineRegistry, FinishReason

pytestmark = pytest.mark.asyncio


class Probe:
    """What an engine saw: items it yielded, how it ended, and ctx.is_killed() inside its `finally`."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.exit: str | None = None
        self.killed_in_finally: bool | None = None
        self.yielded = 0


def make_registry(probe: Probe) -> EngineRegistry:
    registry = EngineRegistry()

    @registry.engine("ticks", request=CountRequest, response=CountResponse)
    async def ticks(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
        probe.started.set()
        try:
            for i in range(request.count):
                if ctx.is_stopped():
                    probe.exit = "stopped"
                    return
                if request.delay_s:
                    await asyncio.sleep(request.delay_s)
                probe.yielded += 1
                yield CountResponse(index=i)
            probe.exit = "completed"
        except asyncio.CancelledError:
            probe.exit = "cancelled"
            raise
        except GeneratorExit:
            probe.exit = "generator-exit"
            raise
        finally:
            probe.killed_in_finally = ctx.is_killed()
            probe.ended.set()

    @registry.engine("suicide", request=CountRequest, response=CountResponse)
    async def suicide(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
        yield CountResponse(index=0)
        ctx.kill()
        await asyncio.sleep(10)
        yield CountResponse(index=1)

    return registry


async def open_ticks(probe: Probe, count: int, delay: float = 0.0, ctx: Context | None = None):  # type: ignore[no-untyped-def]
    engine = make_registry(probe).get("ticks").downcast(CountRequest, CountResponse)
    assert engine is not None
    return await engine.generate(CountRequest(count=count, delay_s=delay), ctx)


async def test_generate_makes_a_context_when_none_is_given() -> None:
    stream = await open_ticks(Probe(), 2)
    assert isinstance(stream.context, Context)
    assert [item.index async for item in stream] == [0, 1]
    assert stream.finish_reason is FinishReason.COMPLETED


async def test_generate_uses_the_given_context() -> None:
    ctx = Context("mine")
    stream = await open_ticks(Probe(), 1, ctx=ctx)
    assert stream.context is ctx


async def test_stop_lets_produced_items_flow_and_ends_when_the_engine_returns() -> None:
    probe = Probe()
    stream = await open_ticks(probe, 1000, delay=0.001)
    got = []
    async for item in stream:
        got.append(item.index)
        if len(got) == 3:
            stream.context.stop_generating()
    assert probe.exit == "stopped"
    assert got == list(range(len(got))) and len(got) >= 3
    assert stream.finish_reason is FinishReason.STOPPED


async def test_items_buffered_before_a_stop_are_still_delivered() -> None:
    probe = Probe()
    stream = await open_ticks(probe, 5)
    await probe.ended.wait()  # the engine ran to completion into the buffer
    stream.context.stop()
    assert [item.index async for item in stream] == [0, 1, 2, 3, 4]
    # The engine had returned before the stop: STOPPED is only for a stop asked before the engine returned.
    assert stream.finish_reason is FinishReason.COMPLETED


async def test_kill_cancels_the_engine_at_its_await_with_killed_already_true() -> None:
    probe = Probe()
    stream = await open_ticks(probe, 10, delay=10)
    await probe.started.wait()
    await asyncio.sleep(0)
    stream.context.kill()
    assert [item async for item in stream] == []
    assert probe.exit == "cancelled"
    assert probe.killed_in_finally is True


async def test_kill_closes_an_engine_suspended_at_yield_with_generator_exit() -> None:
    probe = Probe()
    stream = await open_ticks(probe, 100_000)
    await probe.started.wait()
    await asyncio.sleep(0.01)  # the engine filled the buffer and waits at its yield
    stream.context.kill()
    assert await stream.next_batch() == []
    assert probe.exit == "generator-exit"
    assert probe.killed_in_finally is True


async def test_a_consumer_kill_ends_iteration_quietly_after_the_finally_ran() -> None:
    probe = Probe()
    stream = await open_ticks(probe, 1000, delay=0.001)
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 2:
            stream.context.kill()
    assert probe.ended.is_set() and probe.killed_in_finally is True
    assert stream.finish_reason is None


async def test_nothing_is_delivered_after_a_kill() -> None:
    probe = Probe()
    stream = await open_ticks(probe, 50)
    await probe.ended.wait()
    stream.context.kill()
    assert await stream.next_batch() == []


async def test_a_killed_ancestor_ends_the_stream_quietly() -> None:
    probe = Probe()
    root = Context()
    stream = await open_ticks(probe, 10, delay=10, ctx=root.child())
    await probe.started.wait()
    root.kill()
    assert [item async for item in stream] == []
    assert probe.killed_in_finally is True


async def test_an_engine_that_kills_itself_raises_aborted_to_its_consumer() -> None:
    engine = make_registry(Probe()).get("suicide").downcast(CountRequest, CountResponse)
    assert engine is not None
    stream = await engine.generate(CountRequest())
    with pytest.raises(Aborted) as info:
        async for _ in stream:
            pass
    assert info.value.code is Code.ABORTED and stream.context.id in info.value.message


async def test_stopped_and_killed_never_resolve_for_a_completed_stream() -> None:
    stream = await open_ticks(Probe(), 3)
    stopped = asyncio.ensure_future(stream.context.stopped())
    killed = asyncio.ensure_future(stream.context.killed())
    assert len([item async for item in stream]) == 3
    await asyncio.sleep(0.01)
    assert not stopped.done() and not killed.done()
    stopped.cancel()
    killed.cancel()


@pytest.mark.parametrize("how", ["break", "exception", "aclose"])
async def test_leaving_the_loop_early_kills_the_engine(how: str) -> None:
    probe = Probe()
    stream = await open_ticks(probe, 1000, delay=0.001)
    iterator = aiter(stream)
    if how == "aclose":
        await anext(iterator)
        await stream.aclose()
    elif how == "break":
        async for _ in iterator:
            break
        del iterator
    else:
        with pytest.raises(RuntimeError):
            async for _ in iterator:
                raise RuntimeError("consumer failed")
        del iterator
    await asyncio.wait_for(probe.ended.wait(), 10)
    assert stream.context.is_killed() and probe.killed_in_finally is True


async def test_dropping_a_stream_kills_the_engine() -> None:
    probe = Probe()
    ctx = Context()
    stream = await open_ticks(probe, 1000, delay=0.001, ctx=ctx)
    await probe.started.wait()
    del stream
    gc.collect()
    await asyncio.wait_for(probe.ended.wait(), 10)
    assert ctx.is_killed() and probe.killed_in_finally is True


async def test_a_slow_consumer_slows_the_engine() -> None:
    probe = Probe()
    stream = await open_ticks(probe, 1_000_000)
    await probe.started.wait()
    await asyncio.sleep(0.05)
    assert probe.yielded <= 2048  # bounded by the buffer, nowhere near the million asked for
    await stream.aclose()


async def test_engine_error_reaches_the_consumer_after_the_items_before_it() -> None:
    registry = EngineRegistry()

    @registry.engine("fails", request=EchoRequest, response=EchoResponse)
    async def fails(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
        yield EchoResponse(text="first")
        raise EngineError(Code.FAILED_PRECONDITION, "not ready", detail=EchoResponse(text="why"))

    stream = await registry.get("fails").generate(EchoRequest())
    got = []
    with pytest.raises(EngineError) as info:
        async for item in stream:
            got.append(item.text)
    assert got == ["first"]
    assert info.value.code is Code.FAILED_PRECONDITION and info.value.detail == EchoResponse(text="why")


async def test_any_other_exception_becomes_internal_naming_the_engine() -> None:
    registry = EngineRegistry()

    @registry.engine("broken", request=EchoRequest, response=EchoResponse)
    async def broken(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
        raise ZeroDivisionError("secret detail")
        yield EchoResponse()

    stream = await registry.get("broken").generate(EchoRequest())
    with pytest.raises(EngineFailed) as info:
        await stream.next_batch()
    assert info.value.code is Code.INTERNAL and "'broken'" in info.value.message
    assert "secret" not in info.value.message


async def test_a_wrong_response_type_is_internal_naming_the_engine() -> None:
    registry = EngineRegistry()

    @registry.engine("liar", request=EchoRequest, response=EchoResponse)
    async def liar(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
        yield CountResponse(index=1)  # type: ignore[misc]

    stream = await registry.get("liar").generate(EchoRequest())
    with pytest.raises(EngineFailed, match="liar.*examples.v1.CountResponse.*examples.v1.EchoResponse"):
        await stream.next_batch()


async def test_a_leaked_cancelled_error_is_internal_not_a_hang() -> None:
    registry = EngineRegistry()

    @registry.engine("leaky", request=EchoRequest, response=EchoResponse)
    async def leaky(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
        raise asyncio.CancelledError
        yield EchoResponse()

    stream = await registry.get("leaky").generate(EchoRequest())
    with pytest.raises(EngineFailed, match="leaky"):
        await asyncio.wait_for(stream.next_batch(), 1)


async def test_ready_items_are_handed_out_together() -> None:
    probe = Probe()
    stream = await open_ticks(probe, 100)
    await probe.ended.wait()
    batch = await stream.next_batch()
    assert [item.index for item in batch] == list(range(100))
    assert await stream.next_batch() == []
    assert stream.finish_reason is FinishReason.COMPLETED
