"""What the tracing tests check about one traced hop, whichever exporter brought the spans."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse
from engine_runtime.server import EngineError
from engine_runtime.server.stream import FinishReason, ResponseStream

HOP = ("client relay", "server relay", "client probe", "server probe")
"""The four spans of one hop, outermost first: (kind, engine)."""


@dataclass
class Seen:
    """One span as either exporter reports it."""

    name: str
    kind: str  # "client" or "server"
    trace_id: int
    span_id: int
    parent_id: int | None
    attributes: dict[str, Any]
    events: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.kind} {self.attributes['engine.name']}"


async def wait_for(spans: Callable[[], Sequence[Any]], count: int, timeout: float = 10) -> list[Any]:
    """The spans once ``count`` have arrived (a bounded wait: the exporter runs on its own schedule)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = list(spans())
        if len(seen) >= count or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.02)


def check_hop(spans: Sequence[Seen], request_id: str) -> dict[str, Seen]:
    """The hop's four spans by key, checked: one trace, each the parent of the next, the right names and ids."""
    by_key = {span.key: span for span in spans if span.attributes.get("engine.request_id", "").startswith(request_id)}
    assert sorted(by_key) == sorted(HOP), [span.key for span in spans]
    chain = [by_key[key] for key in HOP]
    assert len({span.trace_id for span in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert child.parent_id == parent.span_id, (parent.key, child.key)
    for span in chain:
        assert span.name == f"engine.generate {span.attributes['engine.name']}"
    # The engine's remote call runs in a linked child context, whose id derives from the generation's.
    assert by_key["server relay"].attributes["engine.request_id"] == request_id
    assert by_key["client probe"].attributes["engine.request_id"] == f"{request_id}.1"
    assert by_key["server probe"].attributes["engine.request_id"] == f"{request_id}.1"
    return by_key


async def first_items(stream: ResponseStream[CountResponse], count: int) -> int:
    """Read until ``count`` items have arrived; how many did."""
    got = 0
    while got < count:
        batch = await stream.next_batch()
        if not batch:
            break
        got += len(batch)
    return got


async def drain(stream: ResponseStream[CountResponse]) -> FinishReason | EngineError | None:
    """Read the stream to its end: its finish reason, or the error it ended with."""
    try:
        async for _ in stream:
            pass
    except EngineError as error:
        return error
    return stream.finish_reason


REQUEST = CountRequest(count=0, delay_s=0.01)
"""The relayed probe runs until it is stopped or killed."""
