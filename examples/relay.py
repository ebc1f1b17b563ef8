"""Composition across servers: an engine that calls an engine on another server.

Serve the examples on one server, and this module on a second one that calls the first::

    engine-server --port 50051                                        # upstream: echo, count, ...
    ENGINE_UPSTREAM=127.0.0.1:50051 engine-server examples.relay:registry --port 50052
    engine-client --target 127.0.0.1:50052 generate shout_remote '{"text": "hello there", "delay_s": 0.2}'

`shout_remote` runs upstream `echo` on a linked child context: stopping or killing the call on the second
server stops or kills `echo` on the first, across the hop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.examples_pb2 import EchoRequest, EchoResponse
from engine_runtime.server import Context, Engine, EngineRegistry, Unavailable

__all__ = ["registry"]

UPSTREAM = os.environ.get("ENGINE_UPSTREAM", "127.0.0.1:50051")

registry = EngineRegistry()


class _Upstream:
    """The connection to the upstream server, opened on first use: the event loop exists only once serving."""

    client: EngineClient | None = None
    echo: Engine[EchoRequest, EchoResponse] | None = None


async def upstream_echo() -> Engine[EchoRequest, EchoResponse]:
    if _Upstream.echo is None:
        if _Upstream.client is None:
            _Upstream.client = await EngineClient(UPSTREAM).__aenter__()
        echo = (await _Upstream.client.get("echo")).downcast(EchoRequest, EchoResponse)
        if echo is None:
            raise Unavailable(f"the upstream server {UPSTREAM} serves an `echo` with other types")
        _Upstream.echo = echo
    return _Upstream.echo


@registry.engine("shout_remote", request=EchoRequest, response=EchoResponse)
async def shout_remote(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Calls `echo` on the upstream server (ENGINE_UPSTREAM) through a linked child context, upper-cased."""
    echo = await upstream_echo()
    async for item in await echo.generate(request, ctx.child()):
        yield EchoResponse(text=item.text.upper())
