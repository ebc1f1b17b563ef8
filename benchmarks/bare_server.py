"""The baseline: a bare ``grpc.aio`` server doing the ``count`` engine's work, one item per message.

Every figure of the harness is reported as a ratio to this server measured in the same run, so that the noise
of a shared machine cancels out. It does per item what the project's ``count`` engine does (build a
``CountResponse(index=i, payload="x" * size)``) and nothing the project adds (no registry, no context, no
coalescing): one item is one message. Run it as its own process::

    python -m benchmarks.bare_server --port 0 --loop auto

It logs ``bare-server listening on 127.0.0.1:PORT`` to stderr once it serves (the same shape as the
``engine-server`` line, so the harness reads both alike). Methods, all over raw bytes:

- ``/bare.Bare/Count`` (unary-stream): a serialized ``CountRequest`` in, ``CountResponse`` messages out,
  ``delay_s`` apart (0: flat out), written with ``context.write``;
- ``/bare.Bare/CountGen``: the same as an async-generator handler (the harness uses whichever is faster);
- ``/bare.Bare/CountMeta``: like ``Count``, sending initial metadata of its own first (an ``x-request-id``, as the
  project's protocol does): grpc.aio sends that as an operation of its own, which the project pays on every
  call; the harness times it beside the bare server to show that share;
- ``/bare.Bare/Stamped``: like ``Count``, each item's payload being ``time.time()`` just before its write;
- ``/bare.Bare/Probe``: like ``Count``, and when the call is cancelled it records ``time.time()`` in its
  ``finally``, keyed by the ``x-request-id`` metadata: the bare equivalent of the engine seeing its kill;
- ``/bare.Bare/ProbeTimes`` (unary): the recorded times as JSON ``{request_id: time}``, and forgets them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import grpc

from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse

__all__ = ["COUNT", "COUNT_GEN", "COUNT_META", "PROBE", "PROBE_TIMES", "SERVICE", "STAMPED", "main", "run"]

SERVICE = "bare.Bare"
COUNT = f"/{SERVICE}/Count"
COUNT_GEN = f"/{SERVICE}/CountGen"
COUNT_META = f"/{SERVICE}/CountMeta"
STAMPED = f"/{SERVICE}/Stamped"
PROBE = f"/{SERVICE}/Probe"
PROBE_TIMES = f"/{SERVICE}/ProbeTimes"

REQUEST_ID_KEY = "x-request-id"
# Bounds what a long run can make the probe remember, should the harness never collect.
MAX_PROBES = 100_000

T = TypeVar("T")

Context = grpc.aio.ServicerContext[Any, Any]


class Bare:
    """The handlers; ``killed_at`` holds the cancel probe's records until ``ProbeTimes`` takes them."""

    def __init__(self) -> None:
        self.killed_at: dict[str, float] = {}

    async def count(self, raw: bytes, context: Context) -> None:
        request = CountRequest.FromString(raw)
        payload = "x" * request.size
        delay = request.delay_s
        for index in range(request.count):
            if delay > 0 and index:
                await asyncio.sleep(delay)
            await context.write(CountResponse(index=index, payload=payload).SerializeToString())

    async def count_meta(self, raw: bytes, context: Context) -> None:
        await context.send_initial_metadata(((REQUEST_ID_KEY, uuid.uuid4().hex),))
        await self.count(raw, context)

    # The same loop as `count`, written out again on purpose: a helper shared by the two handler styles would add
    # an async-generator hop per message to the baseline that the project is measured against.
    async def count_gen(self, raw: bytes, context: Context) -> AsyncIterator[bytes]:
        request = CountRequest.FromString(raw)
        payload = "x" * request.size
        delay = request.delay_s
        for index in range(request.count):
            if delay > 0 and index:
                await asyncio.sleep(delay)
            yield CountResponse(index=index, payload=payload).SerializeToString()

    async def stamped(self, raw: bytes, context: Context) -> None:
        request = CountRequest.FromString(raw)
        for index in range(request.count):
            if index:
                await asyncio.sleep(request.delay_s)
            await context.write(CountResponse(index=index, payload=repr(time.time())).SerializeToString())

    async def probe(self, raw: bytes, context: Context) -> None:
        request_id = dict(context.invocation_metadata() or ()).get(REQUEST_ID_KEY, "")
        cancelled = False
        try:
            await self.count(raw, context)
        except asyncio.CancelledError:
            # grpc.aio cancels the handler's task when the client cancels: the moment the "engine" is killed.
            cancelled = True
            raise
        finally:
            if cancelled and request_id:
                if len(self.killed_at) >= MAX_PROBES:
                    self.killed_at.clear()
                self.killed_at[str(request_id)] = time.time()

    async def probe_times(self, raw: bytes, context: Context) -> bytes:
        times, self.killed_at = self.killed_at, {}
        return json.dumps(times).encode()

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Count": grpc.unary_stream_rpc_method_handler(self.count),
                "CountGen": grpc.unary_stream_rpc_method_handler(self.count_gen),
                "CountMeta": grpc.unary_stream_rpc_method_handler(self.count_meta),
                "Stamped": grpc.unary_stream_rpc_method_handler(self.stamped),
                "Probe": grpc.unary_stream_rpc_method_handler(self.probe),
                "ProbeTimes": grpc.unary_unary_rpc_method_handler(self.probe_times),
            },
        )


async def serve(host: str, port: int) -> None:
    # No SO_REUSEPORT: a second server on a fixed port must fail, not share it silently.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers([Bare().handler()])
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"bare-server: cannot listen on {host}:{port}")
    await server.start()
    print(f"bare-server listening on {host}:{bound}", file=sys.stderr, flush=True)
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(0)


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` on the event loop that ``--loop`` names, as ``engine-server --loop`` does."""
    if loop in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise SystemExit("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (logged on stderr)")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port), args.loop)


if __name__ == "__main__":
    main()
