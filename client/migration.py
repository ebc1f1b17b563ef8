"""Migration: a resumable remote stream that breaks is sent again, from where its consumer stands.

When the call of a resumable engine's generation breaks (its replica died, its connection was lost or found dead
by keepalive, or a draining server handed it off with ``x-continue-elsewhere``), the client re-sends the same
``GenerateRequest`` (same request id) with ``resume_from`` set to the items it has received, on a new call: the
channel's balancer picks a live replica. :class:`Migrations` is the client's policy and count;
:class:`Resend` opens the new calls. ``RemoteStream`` (:mod:`.remote`) decides when, so that its consumer sees one
stream with every item once.

Example::

    async with EngineClient(fleet_target, migration_limit=3) as client:
        ...
        client.migrations          # how many times this client's streams continued on another replica
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.server.errors import Code, EngineError

if TYPE_CHECKING:
    from .transport import SessionCall, Transport

__all__ = ["DEFAULT_MIGRATION_LIMIT", "Migrations", "Resend"]

log = logging.getLogger("engine_runtime.client")

DEFAULT_MIGRATION_LIMIT = 3
"""How many times one stream may continue on another replica (``EngineClient(migration_limit=...)``)."""

# A stream breaks with UNAVAILABLE: the replica died, was drained, or its connection was lost. A re-sent call
# may also find the id still held by the replica it left (that one has not noticed yet): ALREADY_EXISTS.
_BREAKS = {Code.UNAVAILABLE}
_RESEND_REFUSALS = {Code.UNAVAILABLE, Code.ALREADY_EXISTS}


class Migrations:
    """How many times each resumable stream may be re-sent (``limit``; 0: never), and how many times streams were.

    One per :class:`~.client.EngineClient`, shared by its streams.
    """

    def __init__(self, limit: int = DEFAULT_MIGRATION_LIMIT) -> None:
        if limit < 0:
            raise ValueError(f"migration_limit must be 0 or more, got {limit}")
        self.limit = limit
        self.count = 0

    def allows(self, error: EngineError, done: int) -> bool:
        """Whether a stream that has been re-sent ``done`` times may be re-sent after ``error``."""
        breaks = _RESEND_REFUSALS if done else _BREAKS
        return done < self.limit and error.code in breaks

    def record(self, engine: str, request_id: str, resume_from: int, done: int, why: str) -> None:
        """Log and count one migration (the ``done``-th of the stream)."""
        self.count += 1
        log.warning(
            "engine %r request %s: %s; continuing on another replica after %d items (migration %d of at most %d)",
            engine,
            request_id,
            why,
            resume_from,
            done,
            self.limit,
            extra={"engine": engine, "request_id": request_id, "resume_from": resume_from, "migration": done},
        )


class Resend:
    """Opens the calls of one generation: the first, and each re-send with its ``resume_from``.

    Every call keeps what is left of the generation's ``timeout`` (None: no deadline), so migrations do not
    extend it.
    """

    __slots__ = ("_deadline", "_error_class", "_request", "_transport", "resume_base")

    def __init__(
        self,
        transport: Transport,
        request: pb.GenerateRequest,
        error_class: type[Message] | None,
        timeout: float | None,
    ) -> None:
        self._transport = transport
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
        return self._transport.session(
            self._request.engine, self._error_class, None if remaining is None else max(remaining, 0.0)
        )

    def start(self, received: int) -> bytes:
        """The serialized ``start`` of a call, for a consumer that has ``received`` items since the first call."""
        request = pb.GenerateRequest()
        request.CopyFrom(self._request)
        request.resume_from = self.resume_base + received
        return pb.SessionRequest(start=request).SerializeToString()
