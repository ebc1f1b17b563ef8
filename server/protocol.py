"""The wire contract of ``engine.v1``, as both the servicer and the client speak it.

Everything the two sides must agree on and that the generated code does not already say lives here, once:

- the service's name and method paths;
- the type-URL prefix of every ``google.protobuf.Any`` and the request-type check;
- the metadata keys (``x-request-id``, ``x-stop-key``, ``x-served-by``, ``x-continue-elsewhere``, the rich-status
  trailer, the retry pushback);
- status codes and :class:`~.errors.EngineError` subclasses, in both directions (:func:`error_for` and each
  subclass's ``default_code``), and the rich status (``google.rpc.Status``) that carries an error's ``detail``.

It imports no gRPC: a status code is a :class:`~.errors.Code`, which compares equal to ``grpc.StatusCode``.

Example::

    error = error_for(grpc.StatusCode.ABORTED, "generation 'r1' was killed")   # an Aborted
    trailer = status_trailer(error)      # None, or the bytes of `grpc-status-details-bin`
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from . import errors
from .errors import Code, EngineError

__all__ = [
    "CONTINUE_ELSEWHERE_KEY",
    "GENERATE",
    "LIST_ENGINES",
    "MAX_ECHO",
    "PUSHBACK_KEY",
    "PUSHBACK_MS",
    "REQUEST_ID_KEY",
    "RETRYABLE_CODES",
    "SERVED_BY_KEY",
    "SERVICE_NAME",
    "SESSION",
    "STATUS_DETAILS_KEY",
    "STOP",
    "STOP_KEY_KEY",
    "TYPE_URL_PREFIX",
    "check_request_type",
    "error_for",
    "error_from_status",
    "pushback_for",
    "shorten",
    "status_trailer",
    "type_name",
]

SERVICE_NAME = "engine.v1.EngineService"
GENERATE = f"/{SERVICE_NAME}/Generate"
SESSION = f"/{SERVICE_NAME}/Session"
STOP = f"/{SERVICE_NAME}/Stop"
LIST_ENGINES = f"/{SERVICE_NAME}/ListEngines"

TYPE_URL_PREFIX = "type.googleapis.com/"

REQUEST_ID_KEY = "x-request-id"
"""Initial metadata of every generation: its request id (the client's, or one the server made)."""
STOP_KEY_KEY = "x-stop-key"
"""Initial metadata of every generation: the unguessable key a `Stop` for it must carry."""
CONTINUE_ELSEWHERE_KEY = "x-continue-elsewhere"
"""Trailing metadata of a resumable generation the drain handed off (status UNAVAILABLE): how many items of the
generation the client has (decimal). Re-send the same request with that ``resume_from`` to another replica."""
STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""Trailing metadata: a serialized ``google.rpc.Status`` whose details hold the engine's typed error."""
PUSHBACK_KEY = "grpc-retry-pushback-ms"
"""Trailing metadata of a call that ended before its engine ran (gRFC A6): retry after this many ms, or,
negative, do not retry (:func:`pushback_for`)."""
PUSHBACK_MS = 100
"""The pushback of a call another replica may take: long enough not to hammer a saturated replica, short enough
that a retry landing elsewhere is hardly delayed."""
RETRYABLE_CODES = (Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE)
"""Refusals another replica may serve (a limit, a full queue, a drain); bad input, an unknown engine or a
duplicate id fail the same way everywhere."""
SERVED_BY_KEY = "x-served-by"
"""Initial metadata of every generation: the address of the replica that runs it (``Stop`` it there)."""

_BY_CODE: dict[Code, Callable[[str, Message | None], EngineError]] = {
    cls.default_code: cls
    for cls in (
        errors.EngineNotFound,
        errors.InvalidRequest,
        errors.AlreadyExists,
        errors.ResourceExhausted,
        errors.EngineFailed,
        errors.Aborted,
        errors.Unavailable,
        errors.DataLoss,
    )
}


def pushback_for(code: Code) -> tuple[str, str]:
    """The ``grpc-retry-pushback-ms`` trailer of a call that ended with ``code`` before its engine ran."""
    return PUSHBACK_KEY, str(PUSHBACK_MS) if code in RETRYABLE_CODES else "-1"


def error_for(code: Any, message: str, detail: Message | None = None) -> EngineError:
    """The :class:`EngineError` subclass that stands for ``code`` (the base class for codes without one).

    ``code`` is a :class:`Code`, a ``grpc.StatusCode``, a number or a name.

    Example::

        error_for(Code.ABORTED, "generation 'r1' was killed")   # an Aborted
    """
    code = Code.of(code)
    cls = _BY_CODE.get(code)
    if cls is None:
        return EngineError(code, message, detail)
    return cls(message, detail)


MAX_ECHO = 128
"""The most characters of a client-chosen name or id that an error message repeats."""


def shorten(text: str, limit: int = MAX_ECHO) -> str:
    """``text`` as an error message may repeat it: whole up to ``limit`` characters, else cut and marked.

    Example::

        shorten("x" * 100_000)     # 'xxx...x... (100000 characters)', 128 x's
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def type_name(type_url: str) -> str:
    """The full name an ``Any``'s type URL names (everything after the last ``/``)."""
    return type_url[type_url.rfind("/") + 1 :]


def check_request_type(engine: str, expected: str, received: str) -> None:
    """Raise :class:`InvalidRequest` naming both types unless ``received`` (a full name) is ``expected``."""
    if received != expected:
        raise errors.InvalidRequest(
            f"engine {engine!r} expects a request of type {expected}, received {shorten(received) or 'an empty Any'}"
        )


def status_trailer(error: EngineError) -> bytes | None:
    """The ``grpc-status-details-bin`` value that carries ``error.detail``, or None when it has none."""
    if error.detail is None:
        return None
    detail = any_pb2.Any()
    detail.Pack(error.detail, type_url_prefix=TYPE_URL_PREFIX.rstrip("/"))
    status = status_pb2.Status(code=int(error.code), message=error.message, details=[detail])
    return bytes(status.SerializeToString())


def error_from_status(
    code: Any,
    message: str | None,
    trailing: Iterable[tuple[str, str | bytes]] | None,
    error_class: type[Message] | None,
) -> EngineError:
    """The error a call's final status stands for, with the typed ``detail`` decoded when ``error_class`` is given."""
    detail: Message | None = None
    for key, value in trailing or ():
        if key != STATUS_DETAILS_KEY or error_class is None or isinstance(value, str):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            continue  # a trailer that does not parse loses the detail, never the status
        for packed in status.details:
            if type_name(packed.type_url) == error_class.DESCRIPTOR.full_name:
                detail = error_class.FromString(packed.value)
    code = Code.of(code)
    return error_for(code, message or code.name, detail)
