"""The coalescing writer: one generation's batches onto its call, and how the generation ended.

Everything the engine produced since the last write leaves in one ``GenerateResponse`` (never waiting to fill
one); the last message carries the finish reason. A batch that would pass the message size limit is split
into messages under it, and an item too large for any message ends the generation RESOURCE_EXHAUSTED naming
its size, after the items before it. The writer returns the generation's :class:`~.outcome.Ending`.

It is plain asyncio: the call is anything with ``send_initial_metadata`` and ``write`` (grpc.aio's servicer
context in the server).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

from .errors import Code, EngineError, ResourceExhausted
from .inflight import Generation
from .outcome import Cause, Ending, How
from .protocol import REQUEST_ID_KEY, STOP_KEY_KEY
from .pump import LocalStream
from .stream import FinishReason
from .wire import encode_response

__all__ = ["Call", "initial_metadata", "split_messages", "write_generation", "write_unstarted"]

# Room for the finish reason (field 2, a varint) after the items.
_REASON_ROOM = 8


class Call(Protocol):
    """What the writer needs of a call."""

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, str]], /) -> None: ...
    async def write(self, message: bytes, /) -> None: ...


def initial_metadata(generation: Generation, extra: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
    """The initial metadata of every generation's call, sent at once (before it waits in a queue): the one place
    it is built. ``extra`` is the server's own (``x-served-by``)."""
    return ((REQUEST_ID_KEY, generation.id), (STOP_KEY_KEY, generation.stop_key), *extra)


async def write_unstarted(generation: Generation, call: Call, ending: Ending) -> Ending:
    """The end of a generation whose engine never started (it left the queue): a graceful stop writes one message,
    no items, STOPPED; any other ending is a status alone."""
    if ending.how is not How.STOPPED:
        return ending
    gone = await _write(generation, call, encode_response([], FinishReason.STOPPED), 0, ending)
    return gone if gone is not None else ending


async def write_generation(generation: Generation, stream: LocalStream[bytes], call: Call, limit: int) -> Ending:
    """Write the stream's batches as they come, each message at most ``limit`` bytes; return how it ended.

    Large items came through the server's output budget (:mod:`.budget`); a batch's share goes back once written.
    The call's initial metadata (:func:`initial_metadata`) was sent already.

    A cancellation of the calling task (the client went away) propagates; if it arrives while the final message
    is being written, :attr:`Generation.finishing` already holds the ending that message announced.
    """
    try:
        while True:
            batch = await stream.next_batch()
            reason = stream.finish_reason
            if not batch and reason is None:
                # The stream ended quietly: the generation was killed (or handed off) on this side.
                return Ending(How.MIGRATED if generation.handed_off else How.KILLED, generation.cause)
            if generation.first_item_at is None and batch:
                generation.first_item_at = time.monotonic()
            finish = None
            if reason is not None:
                how = How.STOPPED if reason is FinishReason.STOPPED else How.COMPLETED
                finish = Ending(how, generation.cause)
            gone: Ending | None = None
            message = encode_response(batch, reason or 0)
            if len(message) <= limit:  # the per-message path: one message, no splitting machinery
                gone = await _write(generation, call, message, len(batch), finish)
            else:
                for part, items, last in split_messages(generation.engine, batch, reason or 0, limit):
                    gone = await _write(generation, call, part, items, finish if last else None)
                    if gone is not None:
                        break
            if gone is not None:
                return gone
            stream.release_taken()
            if finish is not None:
                return finish
    except EngineError as error:
        if generation.context.is_killed():
            # The engine killed its own context (the stream raises Aborted for that).
            generation.kill(Cause.ENGINE)
            return Ending(How.KILLED, generation.cause, error)
        return Ending(How.FAILED, generation.cause or (Cause.ENGINE if error.code is Code.ABORTED else None), error)


async def _write(
    generation: Generation, call: Call, message: bytes, items: int, finish: Ending | None
) -> Ending | None:
    """Write one message; the ending if the client has gone, else None."""
    # Counted as handed to grpc: a client that leaves during the last write has had what it needed.
    generation.items += items
    generation.messages += 1
    if finish is not None:
        generation.finishing = finish
    try:
        await call.write(message)
    except asyncio.CancelledError:
        raise
    except Exception:
        # grpc raises its own internal error type when the call is gone: the client left.
        generation.kill(Cause.CLIENT_CANCEL)
        return Ending(How.KILLED, Cause.CLIENT_CANCEL)
    return None


def split_messages(engine: str, batch: list[bytes], reason: int, limit: int) -> Iterator[tuple[bytes, int, bool]]:
    """``(message, items in it, is the last)`` for one batch: one message unless it would pass ``limit``."""
    message = encode_response(batch, reason)
    if len(message) <= limit:
        yield message, len(batch), reason != 0
        return
    chunk: list[bytes] = []
    size = 0
    for item in batch:
        if len(item) + _REASON_ROOM > limit:
            if chunk:
                yield encode_response(chunk), len(chunk), False
            raise ResourceExhausted(
                f"engine {engine!r} produced an item of {len(item)} bytes, over the message limit of {limit} "
                "bytes (--max-message-bytes)"
            )
        if size + len(item) + _REASON_ROOM > limit:
            yield encode_response(chunk), len(chunk), False
            chunk, size = [], 0
        chunk.append(item)
        size += len(item)
    yield encode_response(chunk, reason), len(chunk), reason != 0
