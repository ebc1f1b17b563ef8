"""The engines the harness serves with ``engine-server benchmarks.engines:registry``.

- the built-in examples (``count`` is the fast and the paced engine of the figures);
- ``cancel_probe``: ``count`` items ``delay_s`` apart; when it is killed, its ``finally`` records
  ``time.time()`` under the request id, the moment the engine itself learnt of the kill;
- ``stamped``: ``count`` items ``delay_s`` apart, each carrying ``time.time()`` at its ``yield`` as its payload, so
  the client can tell how long an item took from the engine to the client (what coalescing could add);
- ``placed``: ``count`` resumable items ``delay_s`` apart, each carrying the id of the process serving it, so
  the client of a fleet can tell which replica served each item (the migration figure, :mod:`.migration`);
  ``placed_once`` is the same, not resumable;
- ``kill_times``: a unary engine returning those records as a ``Struct`` ``{request_id: time}`` and forgetting
  them. The client records its own ``time.time()`` when it cancels; the difference is cancel-to-kill latency.
- ``drain_probe``: items ``delay_s`` apart until ``ctx.is_stopped()``, then ``size`` more (an engine that finishes
  its work on a stop); ``stop_notes`` returns ``{request_id: {"stop_noticed_at", "yielded"}}`` and forgets them.
- the misbehaving engines of the hostile mix (:mod:`.hostile`): ``exits`` (one item, then ``SystemExit``, or
  ``KeyboardInterrupt`` for ``text="interrupt"``), ``fails`` (one item, then an unexpected exception),
  ``leaks_cancel`` (one item, then a ``CancelledError`` nobody asked for) and ``swallows_kill`` (one item, then it
  ignores every cancellation, as an engine stuck in a ``finally`` does).

Both clocks are the same machine's wall clock, which is what makes the difference meaningful.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from google.protobuf.empty_pb2 import Empty
from google.protobuf.struct_pb2 import Struct

from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server import Context, EngineRegistry
from engine_runtime.server.examples import registry as examples

__all__ = ["Moments", "registry"]

# Bounds what a long run can make the probes remember, should the harness never collect.
MAX_PROBES = 100_000


class Moments:
    """``time.time()`` of an event, by request id, until the harness takes them (bounded, should it never)."""

    def __init__(self, limit: int = MAX_PROBES) -> None:
        self.limit = limit
        self._at: dict[str, float] = {}

    def record(self, request_id: str) -> None:
        if len(self._at) >= self.limit:
            self._at.clear()
        self._at[request_id] = time.time()

    def take(self) -> Struct:
        """The moments so far as a ``Struct`` ``{request_id: time}``, forgotten here."""
        taken, self._at = self._at, {}
        return _struct(taken)


registry = EngineRegistry()
registry.merge(examples)

_killed_at = Moments()
_stop_notes: dict[str, dict[str, float]] = {}


@registry.engine("cancel_probe", request=CountRequest, response=CountResponse)
async def cancel_probe(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
    """Streams `count` items `delay_s` apart; records when its `finally` runs after a kill."""
    try:
        for index in range(request.count):
            if index:
                await asyncio.sleep(request.delay_s)
            yield CountResponse(index=index)
    finally:
        if ctx.is_killed():
            _killed_at.record(ctx.id)


@registry.engine("stamped", request=CountRequest, response=CountResponse)
async def stamped(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
    """Streams `count` items `delay_s` apart, each with `time.time()` at its yield as its payload."""
    for index in range(request.count):
        if ctx.is_stopped():
            return
        if index:
            await asyncio.sleep(request.delay_s)
        yield CountResponse(index=index, payload=repr(time.time()))


@registry.engine("placed", request=CountRequest, response=CountResponse, resumable=True)
async def placed(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
    """Streams items `ctx.resume_from` to `count`, `delay_s` apart, each with the serving process id as payload."""
    where = str(os.getpid())
    for index in range(ctx.resume_from, request.count):
        if ctx.is_stopped():
            return
        if index > ctx.resume_from:
            await asyncio.sleep(request.delay_s)
        yield CountResponse(index=index, payload=where)


# The same stream from an engine that makes no promise: what a fault does to a stream that cannot move.
registry.register("placed_once", placed, request=CountRequest, response=CountResponse, resumable=False)


@registry.engine("drain_probe", request=CountRequest, response=CountResponse)
async def drain_probe(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
    """Streams items `delay_s` apart until stopped, then `size` more; records when it saw the stop, and its total."""
    yielded = 0
    try:
        for index in range(request.count):
            if ctx.is_stopped():
                _note(ctx.id, stop_noticed_at=time.time())
                for extra in range(request.size):
                    yielded += 1
                    yield CountResponse(index=index + extra, payload="after-stop")
                return
            if index:
                await asyncio.sleep(request.delay_s)
            yielded += 1
            yield CountResponse(index=index)
    finally:
        _note(ctx.id, yielded=yielded)


def _note(request_id: str, **record: float) -> None:
    if len(_stop_notes) >= MAX_PROBES:
        _stop_notes.clear()
    _stop_notes.setdefault(request_id, {}).update(record)


@registry.engine("stop_notes", request=Empty, response=Struct)
async def stop_notes(request: Empty, ctx: Context) -> Struct:
    """Returns `{request_id: {"stop_noticed_at": time, "yielded": n}}` for the drain probes so far, and forgets them."""
    global _stop_notes
    notes, _stop_notes = _stop_notes, {}
    return _struct(notes)


@registry.engine("kill_times", request=Empty, response=Struct)
async def kill_times(request: Empty, ctx: Context) -> Struct:
    """Returns `{request_id: time.time() at the kill}` for the cancel probes so far, and forgets them."""
    return _killed_at.take()


def _struct(records: dict[str, Any]) -> Struct:
    result = Struct()
    result.update(records)
    return result


@registry.engine("exits", request=EchoRequest, response=EchoResponse)
async def exits(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Yields one item, then raises SystemExit (`text` == "interrupt": KeyboardInterrupt)."""
    yield EchoResponse(text="before")
    if request.text == "interrupt":
        raise KeyboardInterrupt
    raise SystemExit(3)


@registry.engine("fails", request=EchoRequest, response=EchoResponse)
async def fails(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Yields one item, then raises an exception its author did not expect, carrying a secret."""
    yield EchoResponse(text="before")
    raise RuntimeError("secret-internal-detail")


@registry.engine("leaks_cancel", request=EchoRequest, response=EchoResponse)
async def leaks_cancel(request: EchoRequest, ctx: Context) -> AsyncIterator[EchoResponse]:
    """Yields one item, then raises CancelledError without having been cancelled."""
    yield EchoResponse(text="before")
    raise asyncio.CancelledError


@registry.engine("swallows_kill", request=CountRequest, response=CountResponse)
async def swallows_kill(request: CountRequest, ctx: Context) -> AsyncIterator[CountResponse]:
    """Yields one item, then sleeps on through every cancellation: only the server's kill timeout ends its call."""
    yield CountResponse(index=0)
    for _ in range(3600):
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(1)
