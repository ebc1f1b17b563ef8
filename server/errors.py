"""Errors of the engine runtime, each carrying the status code it travels as.

One base, :class:`EngineError`; the runtime raises the subclasses, engines raise the base with any code::

    EngineError(code, message, detail=None)      any code; `detail` is a message of the engine's error type
    ├── EngineNotFound         NOT_FOUND          also a KeyError: no engine (or, from Stop, no generation) by that name
    ├── InvalidRequest         INVALID_ARGUMENT   a request that does not parse, has the wrong type or a bad id
    ├── AlreadyExists          ALREADY_EXISTS     a request id that is already in flight
    ├── ResourceExhausted      RESOURCE_EXHAUSTED a concurrency limit was reached
    ├── EngineFailed           INTERNAL           the engine raised something else or yielded a wrong type
    ├── Aborted                ABORTED            the generation was killed from the far side
    ├── Unavailable            UNAVAILABLE        the server is draining, or could not be reached
    └── DataLoss               DATA_LOSS          a stream that ended without saying how, or did not parse

The codes are :class:`Code`, the canonical gRPC/google.rpc codes as a plain enum, so the runtime does not
import grpc. A :class:`Code` compares equal to the ``grpc.StatusCode`` of the same name and to its number, so
``error.code == grpc.StatusCode.NOT_FOUND`` holds wherever the error came from. The mapping from codes back to
subclasses is :func:`engine_runtime.server.protocol.error_for`.
"""

from __future__ import annotations

import enum
from typing import Any

from google.protobuf.message import Message

__all__ = [
    "Aborted",
    "AlreadyExists",
    "Code",
    "DataLoss",
    "EngineError",
    "EngineEscaped",
    "EngineFailed",
    "EngineNotFound",
    "InvalidRequest",
    "ResourceExhausted",
    "Unavailable",
]


class Code(enum.IntEnum):
    """The canonical status codes (values as in ``google.rpc.Code``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    def __eq__(self, other: object) -> bool:
        # grpc.StatusCode's value is (number, name): match it without importing grpc.
        value = getattr(other, "value", None)
        if isinstance(value, tuple) and value and isinstance(value[0], int) and not isinstance(other, int):
            return int(self) == value[0]
        return int(self) == other

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = enum.IntEnum.__hash__

    @classmethod
    def of(cls, code: Any) -> Code:
        """Accept a :class:`Code`, an int, a name, or a ``grpc.StatusCode`` (whose value is ``(int, str)``)."""
        if isinstance(code, cls):
            return code
        if isinstance(code, str):
            return cls[code.upper()]
        value = getattr(code, "value", code)
        if isinstance(value, tuple):
            value = value[0]
        return cls(int(value))


class EngineError(Exception):
    """An error with a status code, raised by engines and by the runtime.

    ``detail`` is an optional protobuf message of the engine's declared error type; over gRPC it travels as a
    ``google.rpc.Status`` detail and the Python client decodes it back.

    Example::

        raise EngineError(grpc.StatusCode.FAILED_PRECONDITION, "model not loaded", detail=MyError(reason="cold"))
        # caught as `error`: error.code == grpc.StatusCode.FAILED_PRECONDITION (and == 9)
    """

    default_code = Code.UNKNOWN

    def __init__(self, code: Any, message: str, detail: Message | None = None) -> None:
        super().__init__(message)
        self.code = Code.of(code)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"


class _Coded(EngineError):
    def __init__(self, message: str, detail: Message | None = None) -> None:
        super().__init__(self.default_code, message, detail)


class EngineNotFound(_Coded, KeyError):
    """No engine is registered under the name asked for; the message lists the names served."""

    default_code = Code.NOT_FOUND

    def __str__(self) -> str:  # KeyError would quote the message
        return EngineError.__str__(self)


class InvalidRequest(_Coded):
    """The request does not parse, or is of another type than the engine's request type."""

    default_code = Code.INVALID_ARGUMENT


class ResourceExhausted(_Coded):
    """A concurrency limit was reached; the message names the limit."""

    default_code = Code.RESOURCE_EXHAUSTED


class EngineFailed(_Coded):
    """The engine raised something other than :class:`EngineError`, or yielded a value of the wrong type."""

    default_code = Code.INTERNAL


class Aborted(_Coded):
    """The generation was killed from the far side (by the server, or by the engine itself)."""

    default_code = Code.ABORTED


class Unavailable(_Coded):
    """The server is draining or could not be reached."""

    default_code = Code.UNAVAILABLE


class AlreadyExists(_Coded):
    """A generation with the same request id is already in flight."""

    default_code = Code.ALREADY_EXISTS


class DataLoss(_Coded):
    """A stream ended without a finish reason, or sent a response that does not parse."""

    default_code = Code.DATA_LOSS


class EngineEscaped(Exception):
    """An engine raised a ``BaseException`` that is no ``CancelledError`` (``SystemExit``, ``KeyboardInterrupt``, ...).

    Carried as an ordinary exception so that it ends that generation INTERNAL and never reaches the event loop,
    which would stop the whole server for one engine's sake.
    """
