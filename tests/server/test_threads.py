"""Sync engines run in worker threads with the same context: stop checks work, a kill ends them at a yield."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server import Context, EngineRegistry, FinishReason

pytestmark = pytest.mark.asyncio


class Seen:
    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.ended = threading.Event()
        self.killed_in_finally: bool | None = None
        self.gate = threading.Event()
        self.blocked = threading.Event()


def make(seen: Seen) -> EngineRegistry:
    registry = EngineRegistry()

    @registry.engine("rows", request=CountRequest, response=CountResponse)
    def rows(request: CountRequest, ctx: Context) -> Iterator[CountResponse]:
        try:
            for i in range(request.count or 1_000_000):
                seen.threads.add(threading.current_thread().name)
                if ctx.is_stopped():
                    return
                if request.delay_s:
                    seen.blocked.set()
                    seen.gate.wait(request.delay_s)  # blocking, as a sync library would
                yield CountResponse(index=i)
        finally:
            seen.killed_in_finally = ctx.is_killed()
            seen.ended.set()

    @registry.engine("upper", request=EchoRequest, response=EchoResponse)
    def upper(request: EchoRequest, ctx: Context) -> EchoResponse:
        seen.threads.add(threading.current_thread().name)
        return EchoResponse(text=request.text.upper())

    return registry


async def test_a_sync_generator_runs_in_an_engine_thread_and_completes() -> None:
    seen = Seen()
    stream = await make(seen).get("rows").generate(CountRequest(count=5))
    assert [item.index async for item in stream] == [0, 1, 2, 3, 4]
    assert stream.finish_reason is FinishReason.COMPLETED
    assert seen.threads and all(name.startswith("engine") for name in seen.threads)


async def test_a_sync_function_is_a_unary_engine() -> None:
    seen = Seen()
    engine = make(seen).get("upper")
    assert engine.unary
    stream = await engine.generate(EchoRequest(text="abc"))
    assert [item.text async for item in stream] == ["ABC"]
    assert seen.threads and all(name.startswith("engine") for name in seen.threads)


async def test_a_stop_is_seen_from_the_thread() -> None:
    seen = Seen()
    stream = await make(seen).get("rows").generate(CountRequest(delay_s=0.001))
    assert await stream.next_batch()
    stream.context.stop()
    while await stream.next_batch():
        pass
    assert stream.finish_reason is FinishReason.STOPPED


async def test_a_kill_ends_the_call_at_once_and_the_generator_at_its_next_yield() -> None:
    seen = Seen()
    stream = await make(seen).get("rows").generate(CountRequest(delay_s=3600))  # blocked until the gate opens
    task = asyncio.ensure_future(stream.next_batch())
    assert await asyncio.to_thread(seen.blocked.wait, 10)
    stream.context.kill()
    assert await asyncio.wait_for(task, 10) == []  # the call ends while the thread is still blocked
    assert not seen.ended.is_set()
    seen.gate.set()  # the step finishes; the generator is closed at its yield
    assert await asyncio.to_thread(seen.ended.wait, 10)
    assert seen.killed_in_finally is True


async def test_a_blocked_sync_engine_does_not_stall_the_event_loop() -> None:
    seen = Seen()
    registry = make(seen)
    blocked = await registry.get("rows").generate(CountRequest(delay_s=3600))
    other = await registry.get("upper").generate(EchoRequest(text="meanwhile"))
    assert [item.text async for item in other] == ["MEANWHILE"]
    seen.gate.set()
    await blocked.aclose()
