"""The built-in example engines, served by ``engine-server`` when it is given no TARGET.

- ``echo``: one response per whitespace-separated word, ``delay_s`` apart.
- ``count``: ``count`` responses with a payload of ``size`` characters, ``delay_s`` apart (0: flat out);
  refuses out-of-range requests with a typed error (``examples.v1.CountError``). It is resumable: with
  ``ctx.resume_from = N`` it continues at index N, so a client can continue a broken stream on another replica.
- ``shout``: composes ``echo`` through a linked child context and upper-cases what it says; stopping or
  killing ``shout`` reaches the inner ``echo``.
- ``reverse``: a unary engine, the text reversed.

Every engine here checks ``ctx.is_stopped()`` between items, so a graceful stop ends it promptly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from engine_runtime.generated.examples.v1.examples_pb2 import (
    CountError,
    CountRequest,
    CountResponse,
    EchoRequest,
    EchoResponse,
)

from .context import Context
from .errors import Code, EngineError
from .registry import EngineRegistry

__all__ = ["MAX_COUNT", "MAX_SIZE", "registry"]

MAX_COUNT = 100_000_000
MAX_SIZE = 1 << 20

registry = EngineRegistry()


# The health request makes `echo`'s health in grpc.health.v1 mean "answers", not just "registered".
@registry.engine("echo", request=EchoRequest, response=EchoResponse, health_request=EchoRequest(text="ok"))
async def echo(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Streams back each whitespace-separated word of `text`, `delay_s` seconds apart."""
    for i, word in enumerate(request.text.split()):
        if ctx.is_stopped():
            return
        if i and request.delay_s > 0:
            await asyncio.sleep(request.delay_s)
            if ctx.is_stopped():
                return
        yield EchoResponse(text=word)


@registry.engine("count", request=CountRequest, response=CountResponse, error=CountError, resumable=True)
async def count(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
    """Streams `count` responses with a `size`-character payload, `delay_s` seconds apart (0: flat out)."""
    for field, value, limit in (("count", request.count, MAX_COUNT), ("size", request.size, MAX_SIZE)):
        if not 0 <= value <= limit:
            raise EngineError(
                Code.INVALID_ARGUMENT,
                f"{field} must be between 0 and {limit}, got {value}",
                detail=CountError(field=field, value=value, limit=limit),
            )
    payload = "x" * request.size
    delay = request.delay_s
    first = ctx.resume_from  # item i is index i: resuming after N items starts at index N
    for index in range(first, request.count):
        if ctx.is_stopped():
            return
        if delay > 0 and index > first:
            await asyncio.sleep(delay)
        yield CountResponse(index=index, payload=payload)


@registry.engine("shout", request=EchoRequest, response=EchoResponse)
async def shout(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Calls `echo` through a linked child context and upper-cases each word: stop and kill reach `echo`."""
    inner = registry.get("echo").downcast(EchoRequest, EchoResponse)
    assert inner is not None
    async for item in await inner.generate(request, ctx.child()):
        yield EchoResponse(text=item.text.upper())


@registry.engine("reverse", request=EchoRequest, response=EchoResponse)
async def reverse(request: EchoRequest, ctx: Context) -> EchoResponse:
    """A unary engine: returns `text` reversed, as one response."""
    return EchoResponse(text=request.text[::-1])
