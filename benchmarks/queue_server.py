"""``python -m benchmarks.queue_server``: the project's server with an engine behind a queue, for figure (l).

It is the real :class:`~engine_runtime.server.app.EngineServer` (what ``engine-server`` runs), serving:

- ``burst``: ``count`` items ``delay_s`` apart, registered with ``max_concurrency=4``; the server has
  ``--max-queue`` (256 by default), so calls beyond four wait in its queue;
- ``queue_exits``: a unary engine returning ``{request_id: time.time()}`` for every call that left the queue
  other than by being admitted, and forgetting them. The time is taken by the queue's own ``on_left`` hook, the
  moment the server took the call out; the client records its own ``time.time()`` when it cancels, so the
  difference is cancel-to-removal on one machine's clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator

from google.protobuf.empty_pb2 import Empty
from google.protobuf.struct_pb2 import Struct

from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse
from engine_runtime.server import Context, EngineRegistry
from engine_runtime.server.app import EngineServer, ServerConfig
from engine_runtime.server.inflight import Generation
from engine_runtime.server.outcome import Cause

from .bare_server import run
from .engines import Moments

__all__ = ["MAX_CONCURRENCY", "main", "registry"]

MAX_CONCURRENCY = 4

registry = EngineRegistry()
_removed_at = Moments()


@registry.engine("burst", request=CountRequest, response=CountResponse, max_concurrency=MAX_CONCURRENCY)
async def burst(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
    """Streams `count` items `delay_s` apart, at most four generations at once."""
    for index in range(request.count):
        if ctx.is_stopped():
            return
        if index:
            await asyncio.sleep(request.delay_s)
        yield CountResponse(index=index)


@registry.engine("queue_exits", request=Empty, response=Struct)
async def queue_exits(request: Empty, ctx: Context) -> Struct:
    """Returns `{request_id: time.time() when it left the queue}` for calls taken out of it, and forgets them."""
    return _removed_at.take()


def record(generation: Generation, cause: Cause | None) -> None:
    """The queue's ``on_left`` hook: the moment a call was taken out (an admitted call is not a removal)."""
    if cause is not None:
        _removed_at.record(generation.id)


async def serve(host: str, port: int, max_queue: int) -> None:
    config = ServerConfig(host=host, port=port, max_queue=max_queue, announce=False, loop_stall_warning=0)
    async with EngineServer(registry, config) as server:
        server.inflight.admission.on_left(record)
        print(f"queue-server listening on {server.addresses[0]}", file=sys.stderr, flush=True)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(server.kill()))
        await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.queue_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (logged on stderr)")
    parser.add_argument("--max-queue", type=int, default=256)
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port, args.max_queue), args.loop)


if __name__ == "__main__":
    main()
