"""The unary calls of `engine.v1.EngineService` (``Stop``, ``ListEngines``), and how every call's status is set.

The streaming calls (``Generate``, ``Session``) are :mod:`.service`'s; these two only read the registry and the
in-flight table. :func:`set_status` is the one place a status is put on a call: code, message, the typed error's
rich-status trailer, and the retry pushback. Statuses are set with ``set_code``/``set_details`` and a normal return,
never ``abort``: an abort is an exception that a broad handler could swallow.

Example::

    admin = AdminCalls(registry, inflight)
    reply = await admin.list_engines(pb.ListEnginesRequest().SerializeToString(), context)
"""

from __future__ import annotations

import hmac
from typing import Any

import grpc

from engine_runtime.generated.engine.v1 import engine_pb2 as pb

from .context import validate_request_id
from .descriptors import engine_info
from .errors import EngineError, EngineNotFound, InvalidRequest
from .inflight import InFlight
from .outcome import Cause
from .protocol import STATUS_DETAILS_KEY, pushback_for, status_trailer
from .registry import EngineRegistry
from .wire import parse

__all__ = ["AdminCalls", "set_status"]

ServicerContext = grpc.aio.ServicerContext[Any, Any]


class AdminCalls:
    """``Stop`` (by request id and stop key) and ``ListEngines`` (every engine's types and descriptors)."""

    def __init__(self, registry: EngineRegistry, inflight: InFlight) -> None:
        self.registry = registry
        self.inflight = inflight
        self._listing = {engine.name: engine_info(engine) for engine in registry}

    async def stop(self, raw: bytes, context: ServicerContext) -> bytes:
        try:
            request = parse(pb.StopRequest, raw, "the StopRequest")
            problem = validate_request_id(request.request_id)
            if problem is not None:
                raise InvalidRequest(problem)
            generation = self.inflight.get(request.request_id)
            # A wrong key is answered exactly like an id not in flight: nobody learns which ids are running.
            if generation is None or not hmac.compare_digest(generation.stop_key, request.stop_key):
                raise EngineNotFound(f"no generation with request id {request.request_id!r} is in flight")
        except EngineError as error:
            set_status(context, error)
            return b""
        if request.kill:
            generation.kill(Cause.STOP_REQUEST)
        else:
            generation.stop(Cause.STOP_REQUEST)
        return b""

    async def list_engines(self, raw: bytes, context: ServicerContext) -> bytes:
        try:
            request = parse(pb.ListEnginesRequest, raw, "the ListEnginesRequest")
            if request.name:
                self.registry.get(request.name)  # NOT_FOUND naming the engines served
                infos = [self._listing[request.name]]
            else:
                infos = list(self._listing.values())
        except EngineError as error:
            set_status(context, error)
            return b""
        return pb.ListEnginesResponse(engines=infos).SerializeToString()


def set_status(
    context: ServicerContext, error: EngineError, pushback: bool = False, extra: tuple[tuple[str, str], ...] = ()
) -> None:
    """Set the call's status; ``pushback``: nothing ran, so ``grpc-retry-pushback-ms`` may go with it; ``extra``:
    more trailing metadata."""
    context.set_code(grpc.StatusCode[error.code.name])
    context.set_details(error.message)
    trailing: list[tuple[str, str | bytes]] = []
    trailer = status_trailer(error)
    if trailer is not None:
        trailing.append((STATUS_DETAILS_KEY, trailer))
    if pushback:
        trailing.append(pushback_for(error.code))
    trailing.extend(extra)
    if trailing:
        context.set_trailing_metadata(tuple(trailing))
