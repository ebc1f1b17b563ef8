"""Migration: a resumable remote stream that breaks is sent again, from where its consumer stands.

When the call of a resumable engine's generation breaks (its replica died, its connection was lost or found dead
by keepalive, or a draining server handed it off with ``x-continue-elsewhere``), the client re-sends the same
``GenerateRequest`` (same request id) with ``resume_from`` set to the items it has received, on a new call: the
channel's balancer picks a live replica. :class:`Migrations` is the client's policy and count;
:class:`Resend` opens the calls, and :class:`Moves` decides, for one stream, when a new one continues it;
``RemoteStream`` (:mod:`.remote`) reads whichever call is current, so that its consumer sees one stream with
every item once.

Example::

    async with EngineClient(fleet_target, migration_limit=3) as client:
        ...
        client.migrations          # how many times this client's streams continued on another replica
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.server.errors import Code, EngineError
from engine_runtime.server.protocol import CONTINUE_ELSEWHERE_KEY, PUSHBACK_KEY, REQUEST_ID_KEY

if TYPE_CHECKING:
    from engine_runtime.server.context import Context

    from .transport import SessionCall, Transport

__all__ = ["DEFAULT_MIGRATION_LIMIT", "PLACEMENTS", "Migrations", "Moves", "Resend", "why_broken"]

log = logging.getLogger("engine_runtime.client")

DEFAULT_MIGRATION_LIMIT = 3
"""How many times one stream may continue on another replica (``EngineClient(migration_limit=...)``)."""

PLACEMENTS = 5
"""How many times a re-sent call refused before its generation started is sent again (with a backoff)."""
# A started generation breaks with UNAVAILABLE: its replica died, was drained, or its connection was lost.
_BREAK = Code.UNAVAILABLE
# A re-sent call that failed before its generation started (nothing ran): refused by a draining or full
# replica, or by the one it left (which still holds the id); or lost on the way, as when it reaches a replica
# in the moment it shuts down (UNAVAILABLE, or whatever the replica's teardown ends it with: UNKNOWN, CANCELLED,
# INTERNAL). Other codes would fail again.
_REFUSALS = {
    Code.UNAVAILABLE,
    Code.RESOURCE_EXHAUSTED,
    Code.ALREADY_EXISTS,
    Code.INTERNAL,
    Code.UNKNOWN,
    Code.CANCELLED,
}


class Migrations:
    """How many times each resumable stream may be re-sent (``limit``; 0: never), and how many times streams were.

    One per :class:`~.client.EngineClient`, shared by its streams. A migration is a generation that had started
    and broke; a re-sent call that a replica refuses before starting it is placed again after a backoff (at most
    :data:`PLACEMENTS` times in a row), without counting as one.
    """

    def __init__(self, limit: int = DEFAULT_MIGRATION_LIMIT) -> None:
        if limit < 0:
            raise ValueError(f"migration_limit must be 0 or more, got {limit}")
        self.limit = limit
        self.count = 0

    def allows(self, error: EngineError, done: int) -> bool:
        """Whether a stream that has migrated ``done`` times may migrate again after its generation broke."""
        return done < self.limit and error.code == _BREAK

    def retry_delay(self, error: EngineError, refused: int, pushback: str | None) -> float | None:
        """Seconds to wait before placing a refused re-send again (``refused`` in a row so far), or None: give up.

        The replica's ``grpc-retry-pushback-ms`` is the delay when it sent one (negative: do not retry);
        otherwise 25 ms, doubled each time.
        """
        if refused >= PLACEMENTS or error.code not in _REFUSALS:
            return None
        if pushback is not None and pushback.lstrip("-").isdigit():
            return None if int(pushback) < 0 else int(pushback) / 1000
        return min(0.025 * (1 << refused), 1.0)

    def record(self, engine: str, request_id: str, has: int, done: int, why: str) -> None:
        """Log and count one migration (the ``done``-th of the stream, whose consumer has ``has`` items)."""
        self.count += 1
        log.warning(
            "engine %r request %s: %s; continuing on another replica after %d items (migration %d of at most %d)",
            engine,
            request_id,
            why,
            has,
            done,
            self.limit,
            extra={"engine": engine, "request_id": request_id, "resume_from": has, "migration": done},
        )


def why_broken(error: EngineError, trailing: dict[str, str], has: int) -> str:
    """Why a generation's call broke, for the log: the server's hand-off (``x-continue-elsewhere``), or the error.

    ``has`` is how many items the consumer has; a hand-off that counts otherwise is a bug on one side, logged.
    """
    handed_off = trailing.get(CONTINUE_ELSEWHERE_KEY)
    if handed_off is None:
        return f"{error.code.name}: {error.message}"
    if handed_off != str(has):
        # Every item written arrives before the status, so the counts agree; what the consumer has is what counts.
        log.warning("the server counted %s items of a generation handed off, the client %d", handed_off, has)
    return f"the server handed it off ({CONTINUE_ELSEWHERE_KEY}: {handed_off})"


class Resend:
    """Opens the calls of one generation: the first, and each re-send with its ``resume_from``.

    Every call keeps what is left of the generation's ``timeout`` (None: no deadline), so migrations do not
    extend it.
    """

    __slots__ = ("_deadline", "_error_class", "_metadata", "_request", "_transport", "resume_base")

    def __init__(
        self,
        transport: Transport,
        request: pb.GenerateRequest,
        error_class: type[Message] | None,
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._transport = transport
        self._metadata = metadata  # the trace's `traceparent`: every call of the generation is in one trace
        self._request = request
        self._error_class = error_class
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self.resume_base = request.resume_from
        """What the consumer had before the first call (its context's ``resume_from``)."""

    def remaining(self) -> float | None:
        """Seconds left of the generation's timeout (None: no deadline)."""
        return None if self._deadline is None else self._deadline - time.monotonic()

    def call(self) -> SessionCall:
        """A new ``Session`` call; nothing is sent on it yet."""
        remaining = self.remaining()
        timeout = None if remaining is None else max(remaining, 0.0)
        return self._transport.session(self._request.engine, self._error_class, timeout, self._metadata)

    def start(self, received: int) -> bytes:
        """The serialized ``start`` of a call, for a consumer that has ``received`` items since the first call."""
        request = pb.GenerateRequest()
        request.CopyFrom(self._request)
        request.resume_from = self.resume_base + received
        return pb.SessionRequest(start=request).SerializeToString()


class Moves:
    """The migrations of one stream: after a break, the call that continues it, within the client's policy."""

    __slots__ = ("done", "migrations", "refused", "resend")

    def __init__(self, resend: Resend, migrations: Migrations) -> None:
        self.resend = resend
        self.migrations = migrations
        self.done = 0  # how many times the stream continued on a new call
        self.refused = 0  # re-sent calls that failed in a row before their generation started

    async def next_call(
        self, error: EngineError, call: SessionCall, engine: str, context: Context, received: int
    ) -> SessionCall | None:
        """The new call (its ``start`` sent) that continues the generation after ``call`` failed with ``error``,
        its consumer having ``received`` items since the first call; None when it may not continue."""
        migrations, resend = self.migrations, self.resend
        remaining = resend.remaining()
        if not migrations.limit or (remaining is not None and remaining <= 0):
            return None
        has = resend.resume_base + received
        pushback = (await call.trailing_metadata()).get(PUSHBACK_KEY)
        # Nothing ran when no generation started (no request id came back), or when the server says so with a
        # pushback (a call that waited in a queue).
        never_ran = pushback is not None or REQUEST_ID_KEY not in await call.initial_metadata()
        if self.done and never_ran:
            # A re-sent call that failed before its generation started: place it again.
            delay = migrations.retry_delay(error, self.refused, pushback)
            if delay is None:
                return None
            self.refused += 1
            await asyncio.sleep(delay)
        elif migrations.allows(error, self.done):
            self.done += 1
            self.refused = 0
            why = why_broken(error, await call.trailing_metadata(), has)
            migrations.record(engine, context.id, has, self.done, why)
        else:
            return None
        if context.is_killed():
            return None
        new = resend.call()
        await new.try_write(resend.start(received))  # if it fails, reading the call says how
        return new
