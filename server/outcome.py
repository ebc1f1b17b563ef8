"""How a generation ended, as one value, and the one function that turns it into what everybody is told.

A generation ends exactly once, where the servicer's writer finishes with it, as an :class:`Ending`: *how*
(completed, stopped, failed, killed), *who or what* caused it (:class:`Cause`: the client, its deadline, a
stop request, the drain, the engine), and the error, if any. :func:`status_of` turns that value into the
status the client gets; the log line and the metrics read the same value, so they cannot disagree with it::

    Ending(How.KILLED, Cause.DRAIN)          -> UNAVAILABLE "the server is shutting down: ..."
    Ending(How.MIGRATED, Cause.DRAIN)        -> UNAVAILABLE "... continue elsewhere", and `x-continue-elsewhere`
    Ending(How.KILLED, Cause.STOP_REQUEST)   -> ABORTED "generation 'r1' was killed by a stop request"
    Ending(How.STOPPED, Cause.STOP_REQUEST)  -> OK, finish reason STOPPED
    Ending(How.FAILED, None, EngineError(FAILED_PRECONDITION, ...))  -> that error
    Ending(How.EXPIRED, Cause.QUEUE_TIMEOUT, ResourceExhausted("waited 2.000s ..."))  -> that error
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import Aborted, Code, EngineError, EngineFailed, Unavailable

__all__ = ["Cause", "Ending", "How", "status_of"]


class Cause(enum.Enum):
    """Who or what stopped or killed a generation; in logs and metrics."""

    CLIENT_CANCEL = "client_cancel"  # the client cancelled the call or went away
    DEADLINE = "deadline"  # the call's deadline passed
    STOP_REQUEST = "stop_request"  # `Stop` or the session's in-band control
    DRAIN = "drain"  # the server is shutting down
    ENGINE = "engine"  # the engine killed its own context
    QUEUE_TIMEOUT = "queue_timeout"  # it waited in its engine's queue past --queue-timeout


class How(enum.Enum):
    """How a generation ended; the ``finish`` field of its log line."""

    COMPLETED = "completed"  # the engine returned, no stop asked: FINISH_REASON_COMPLETED
    STOPPED = "stopped"  # the engine returned after a stop was asked: FINISH_REASON_STOPPED
    FAILED = "failed"  # the engine raised, or yielded a value of the wrong type
    KILLED = "killed"  # killed before it returned; the cause says by whom
    MIGRATED = "migrated"  # a resumable generation the drain ended, for its client to continue elsewhere
    EXPIRED = "expired"  # waited in the queue past --queue-timeout or its deadline; its engine never started


# The status of a kill, by cause, when the client is still there to be told.
_CLIENT_GONE = {Cause.CLIENT_CANCEL: Code.CANCELLED, Cause.DEADLINE: Code.DEADLINE_EXCEEDED}


@dataclass(frozen=True, slots=True)
class Ending:
    """How one generation ended: what happened, who or what caused it, and the error (``FAILED``, engine kills)."""

    how: How
    cause: Cause | None = None
    error: EngineError | None = None

    @property
    def code(self) -> Code:
        """The status code the client got."""
        if self.how in (How.COMPLETED, How.STOPPED):
            return Code.OK
        if self.error is not None:
            return self.error.code
        if self.cause in _CLIENT_GONE:
            return _CLIENT_GONE[self.cause]
        return Code.UNAVAILABLE if self.cause is Cause.DRAIN else Code.ABORTED

    @property
    def client_gone(self) -> bool:
        """Whether the call was already over on the client's side (nothing is sent)."""
        return self.how is How.KILLED and self.cause in _CLIENT_GONE


def status_of(ending: Ending, request_id: str) -> EngineError | None:
    """The error status to send for ``ending``, or None when the call ends OK (or the client is gone)."""
    if ending.code is Code.OK or ending.client_gone:
        return None
    error = ending.error
    if error is not None:
        if error.code is Code.INTERNAL:
            # Never the engine's own words for an unexpected failure: they were logged with the request id.
            return EngineFailed(f"{error.message} (request id {request_id})")
        return error
    if ending.how is How.MIGRATED:
        return Unavailable(
            f"the server is shutting down: resumable generation {request_id!r} is to continue on another replica"
        )
    if ending.cause is Cause.DRAIN:
        return Unavailable(f"the server is shutting down: generation {request_id!r} ran past the stop timeout")
    return Aborted(f"generation {request_id!r} was killed by a stop request")
