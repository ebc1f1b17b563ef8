"""Where a fast engine's time per item goes on the server, piece by piece, without grpc.

``python -m benchmarks.breakdown`` times each step an item of the ``count`` engine takes between the engine and
the wire, in this process and on one CPU, and the whole in-process pipeline (engine -> pump -> framing ->
batches) for comparison with the server's CPU per item in the throughput figure. The difference between
the two is what grpc adds per item (its per-message cost spread over a batch). Best of several runs, in
nanoseconds per item.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable

from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse
from engine_runtime.server import Context
from engine_runtime.server.examples import count, registry
from engine_runtime.server.wire import encode_response, item_encoder

__all__ = ["main"]

SIZE = 16
BATCH = 1024  # the servicer's default most items per message


def _best(fn: Callable[[int], float], n: int, runs: int) -> float:
    """Best time per item in ns over ``runs`` runs of ``fn(n)`` (which returns seconds)."""
    return min(fn(n) for _ in range(runs)) / n * 1e9


def _build(n: int) -> float:
    payload = "x" * SIZE
    start = time.perf_counter()
    for index in range(n):
        CountResponse(index=index, payload=payload)
    return time.perf_counter() - start


def _serialize(n: int) -> float:
    item = CountResponse(index=12345, payload="x" * SIZE)
    start = time.perf_counter()
    for _ in range(n):
        item.SerializeToString()
    return time.perf_counter() - start


def _frame(n: int) -> float:
    encode = item_encoder(CountResponse)
    item = CountResponse(index=12345, payload="x" * SIZE)
    start = time.perf_counter()
    for _ in range(n):
        encode(item)
    return time.perf_counter() - start


def _join(n: int) -> float:
    framed = [item_encoder(CountResponse)(CountResponse(index=1, payload="x" * SIZE))] * BATCH
    batches = max(1, n // BATCH)
    start = time.perf_counter()
    for _ in range(batches):
        encode_response(framed)
    return (time.perf_counter() - start) * n / (batches * BATCH)


def _is_stopped(n: int) -> float:
    ctx = Context()
    start = time.perf_counter()
    for _ in range(n):
        ctx.is_stopped()
    return time.perf_counter() - start


async def _constant(n: int) -> AsyncIterator[int]:
    for _ in range(n):
        yield 0


def _async_hop(n: int) -> float:
    async def consume() -> float:
        start = time.perf_counter()
        async for _ in _constant(n):
            pass
        return time.perf_counter() - start

    return asyncio.run(consume())


def _engine(n: int) -> float:
    async def consume() -> float:
        start = time.perf_counter()
        async for _ in count(CountRequest(count=n, size=SIZE), Context()):
            pass
        return time.perf_counter() - start

    return asyncio.run(consume())


def _pipeline(n: int) -> float:
    """The servicer's path without grpc: engine task, pump, framing, batches taken by a consumer."""
    engine = registry.get("count")
    encode = item_encoder(engine.response_class, engine.check_response)

    async def consume() -> float:
        start = time.perf_counter()
        stream = await engine.generate(CountRequest(count=n, size=SIZE), Context(), encode=encode, max_items=BATCH)
        while batch := await stream.next_batch():
            encode_response(batch)
        return time.perf_counter() - start

    return asyncio.run(consume())


STEPS: list[tuple[str, Callable[[int], float]]] = [
    ("engine: build CountResponse", _build),
    ("engine: ctx.is_stopped()", _is_stopped),
    ("async generator hop (yield + async for)", _async_hop),
    ("count engine alone (the three above)", _engine),
    ("SerializeToString", _serialize),
    ("framing (wire.item_encoder, incl. SerializeToString)", _frame),
    ("joining a batch (wire.encode_response)", _join),
    ("whole pipeline without grpc (engine+pump+framing+batches)", _pipeline),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.breakdown", description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=200_000, help="items per run")
    parser.add_argument("--runs", type=int, default=5, help="runs per step (the best is reported)")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to (-1: do not pin)")
    args = parser.parse_args(argv)
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    for name, fn in STEPS:
        print(f"{_best(fn, args.items, args.runs):8.0f} ns/item  {name}")


if __name__ == "__main__":
    main()
