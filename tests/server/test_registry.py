"""The registry and type erasure: the origin's `AnyAsyncEngine` downcast test, ported."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from engine_runtime.generated.examples.v1.examples_pb2 import (
    CountError,
    CountRequest,
    CountResponse,
    EchoRequest,
    EchoResponse,
)
from engine_runtime.server import AnyEngine, Context, EngineNotFound, EngineRegistry, InvalidRequest
from engine_runtime.server.examples import registry as examples


class Responder:
    """An object engine, as in the origin's test: answers "response to <text>"."""

    async def generate(self, request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
        yield EchoResponse(text=f"response to {request.text}")


@pytest.fixture
def registry() -> EngineRegistry:
    registry = EngineRegistry()
    registry.register("typed", Responder(), request=EchoRequest, response=EchoResponse, error=CountError)
    return registry


def test_type_ids_are_protobuf_full_names(registry: EngineRegistry) -> None:
    erased = registry.get("typed")
    assert isinstance(erased, AnyEngine)
    assert erased.request_type == "examples.v1.EchoRequest"
    assert erased.response_type == "examples.v1.EchoResponse"
    assert erased.error_type == "examples.v1.CountError"
    assert erased.unary is False


@pytest.mark.asyncio
async def test_the_right_downcast_succeeds_and_generates(registry: EngineRegistry) -> None:
    typed = registry.get("typed").downcast(EchoRequest, EchoResponse, CountError)
    assert typed is not None
    stream = await typed.generate(EchoRequest(text="hello"))
    assert [item.text async for item in stream] == ["response to hello"]


def test_each_wrong_type_returns_none(registry: EngineRegistry) -> None:
    erased = registry.get("typed")
    assert erased.downcast(CountRequest, EchoResponse) is None
    assert erased.downcast(EchoRequest, CountResponse) is None
    assert erased.downcast(EchoRequest, EchoResponse, EchoResponse) is None


def test_without_error_any_declared_error_type_is_accepted(registry: EngineRegistry) -> None:
    assert registry.get("typed").downcast(EchoRequest, EchoResponse) is not None


def test_engines_without_an_error_type_report_none() -> None:
    assert examples.get("echo").error_type is None
    assert examples.get("echo").downcast(EchoRequest, EchoResponse, CountError) is None


def test_get_unknown_raises_engine_not_found_naming_the_served(registry: EngineRegistry) -> None:
    with pytest.raises(KeyError) as info:
        registry.get("nope")
    assert isinstance(info.value, EngineNotFound)
    assert "'nope'" in str(info.value) and "typed" in str(info.value)


def test_duplicate_names_are_refused(registry: EngineRegistry) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.register("typed", Responder(), request=EchoRequest, response=EchoResponse)


def test_non_engines_and_non_messages_are_refused() -> None:
    registry = EngineRegistry()
    with pytest.raises(TypeError, match="async generator"):
        registry.register("not-callable", 42, request=EchoRequest, response=EchoResponse)
    with pytest.raises(TypeError, match="protobuf message class"):
        registry.register("bad", Responder(), request=str, response=EchoResponse)  # type: ignore[arg-type]


def test_max_concurrency_is_kept_and_checked_at_registration() -> None:
    registry = EngineRegistry()
    assert registry.register("one", Responder(), request=EchoRequest, response=EchoResponse, max_concurrency=1)
    assert registry.get("one").max_concurrency == 1
    assert registry.register("any", Responder(), request=EchoRequest, response=EchoResponse).max_concurrency is None
    with pytest.raises(ValueError, match="max_concurrency must be a whole number >= 0, got -1"):
        registry.register("bad", Responder(), request=EchoRequest, response=EchoResponse, max_concurrency=-1)


@pytest.mark.asyncio
async def test_a_wrong_request_type_is_invalid_naming_both_types(registry: EngineRegistry) -> None:
    with pytest.raises(InvalidRequest, match="examples.v1.EchoRequest.*examples.v1.CountRequest"):
        await registry.get("typed").generate(CountRequest())


@pytest.mark.asyncio
async def test_unary_engines_stream_one_response() -> None:
    reverse = examples.get("reverse")
    assert reverse.unary is True
    typed = reverse.downcast(EchoRequest, EchoResponse)
    assert typed is not None
    assert [item.text async for item in await typed.generate(EchoRequest(text="abc"))] == ["cba"]


def test_descriptions_default_to_the_docstring() -> None:
    assert examples.get("echo").description.startswith("Streams back each")
    assert examples.names() == ["echo", "count", "shout", "reverse"]


@pytest.mark.asyncio
async def test_a_typed_engine_can_be_registered_again_under_another_name() -> None:
    registry = EngineRegistry()
    echo = examples.get("echo").downcast(EchoRequest, EchoResponse)
    assert echo is not None
    again = registry.register("echo-again", echo)
    assert again.request_type == "examples.v1.EchoRequest"
    stream = await again.generate(EchoRequest(text="x y"))
    assert [item.text async for item in stream] == ["x", "y"]


@pytest.mark.asyncio
async def test_nested_engine_kill_runs_the_inner_finally() -> None:
    inner_finally = asyncio.Event()
    inner_killed: list[bool] = []
    registry = EngineRegistry()

    @registry.engine("inner", request=EchoRequest, response=EchoResponse)
    async def inner(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
        try:
            while True:
                yield EchoResponse(text="tick")
                await asyncio.sleep(0.005)
        finally:
            inner_killed.append(ctx.is_killed())
            inner_finally.set()

    @registry.engine("outer", request=EchoRequest, response=EchoResponse)
    async def outer(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
        typed = registry.get("inner").downcast(EchoRequest, EchoResponse)
        assert typed is not None
        async for item in await typed.generate(request, ctx.child()):
            yield item

    stream = await registry.get("outer").generate(EchoRequest())
    await stream.next_batch()
    stream.context.kill()
    assert await stream.next_batch() == []
    await asyncio.wait_for(inner_finally.wait(), 1)
    assert inner_killed == [True]


@pytest.mark.asyncio
async def test_nested_engine_stop_stops_the_inner_one() -> None:
    typed = examples.get("shout").downcast(EchoRequest, EchoResponse)
    assert typed is not None
    stream = await typed.generate(EchoRequest(text=" ".join(["w"] * 1000), delay_s=0.002))
    got = []
    async for item in stream:
        got.append(item.text)
        if len(got) == 2:
            stream.context.stop()
    assert got[:2] == ["W", "W"] and len(got) < 1000
    assert stream.finish_reason is not None and stream.finish_reason.name == "STOPPED"


class Counter:
    """A unary object engine: its `generate` is a coroutine returning one response, and it keeps state."""

    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, request: EchoRequest, ctx: Context) -> EchoResponse:
        self.calls += 1
        return EchoResponse(text=f"{request.text} #{self.calls}")


@pytest.mark.asyncio
async def test_an_object_with_a_unary_generate_is_a_unary_engine() -> None:
    registry = EngineRegistry()
    counter = Counter()
    erased = registry.register("counter", counter, request=EchoRequest, response=EchoResponse)
    assert erased.unary is True
    typed = erased.downcast(EchoRequest, EchoResponse)
    assert typed is not None
    for expected in ("a #1", "a #2"):
        assert [item.text async for item in await typed.generate(EchoRequest(text="a"))] == [expected]
