"""The gRPC servicer of `engine.v1.EngineService`: the only server module that speaks grpc.aio.

Each call runs as request -> parse -> registry lookup and type check -> engine (a pump task) -> coalescing
writer -> wire. The handlers are write-style coroutines over raw bytes:

- raw bytes in, so that a request that does not parse is answered INVALID_ARGUMENT naming what failed (grpc's
  own deserializer would answer UNKNOWN);
- raw bytes out, framed by :mod:`.wire` without building an ``Any`` per item;
- ``context.write`` rather than an async-generator handler, because a client cancel then reaches the handler
  at once (as ``CancelledError``, or an error from ``write``) and its ``finally`` kills the generation
  deterministically within about a millisecond.

Statuses are set with ``set_code``/``set_details`` and a normal return, never ``abort``: an abort is an
exception that a broad handler could swallow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2

from engine_runtime.generated.engine.v1 import engine_pb2 as pb

from .context import Context, validate_request_id
from .descriptors import file_descriptor_set
from .engine import LocalEngine
from .errors import Code, EngineError, EngineFailed, InvalidRequest
from .inflight import Cause, Generation, InFlight
from .registry import EngineRegistry
from .stream import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_ITEMS, LocalStream
from .wire import TYPE_URL_PREFIX, encode_response, item_encoder, parse

__all__ = ["SERVICE_NAME", "EngineService"]

SERVICE_NAME = "engine.v1.EngineService"
REQUEST_ID_KEY = "x-request-id"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

log = logging.getLogger("engine_runtime.service")

Finished = Callable[[Generation, Code], None]


class EngineService:
    """Serves an :class:`EngineRegistry` as ``engine.v1.EngineService``.

    Example::

        service = EngineService(registry)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers([service.handler()])
    """

    def __init__(
        self,
        registry: EngineRegistry,
        *,
        inflight: InFlight | None = None,
        max_message_bytes: int = 4 * 1024 * 1024,
        max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS,
    ) -> None:
        self.registry = registry
        self.inflight = inflight if inflight is not None else InFlight()
        self.draining = False
        # Leave room for the message's own framing under grpc's size limit.
        self._max_batch_bytes = max(1, min(DEFAULT_MAX_BATCH_BYTES, max_message_bytes // 2))
        self._max_batch_items = max_batch_items
        self._encoders = {
            engine.name: item_encoder(engine.response_class, engine.check_response) for engine in registry
        }
        self._listing = {engine.name: _engine_info(engine) for engine in registry}
        self._finished: list[Finished] = []
        self._started: list[Callable[[Generation], None]] = []
        self._refused: list[Callable[[str, Code], None]] = []

    def on_started(self, callback: Callable[[Generation], None]) -> None:
        """Call ``callback(generation)`` when a generation is admitted (for metrics)."""
        self._started.append(callback)

    def on_refused(self, callback: Callable[[str, Code], None]) -> None:
        """Call ``callback(engine, code)`` for a Generate/Session call refused before its generation started.

        ``engine`` is the engine's name when the call named a served engine, else ``""``.
        """
        self._refused.append(callback)

    def on_finished(self, callback: Finished) -> None:
        """Call ``callback(generation, code)`` once for every generation, whichever way it ended."""
        self._finished.append(callback)

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a ``grpc.aio.Server``."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Generate": grpc.unary_stream_rpc_method_handler(self.generate),
                "Session": grpc.stream_stream_rpc_method_handler(self.session),
                "Stop": grpc.unary_unary_rpc_method_handler(self.stop),
                "ListEngines": grpc.unary_unary_rpc_method_handler(self.list_engines),
            },
        )

    # -- Generate / Session ------------------------------------------------------------------------------------

    async def generate(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        request = None
        try:
            request = parse(pb.GenerateRequest, raw, "the GenerateRequest")
            generation, stream = self._start(request)
        except EngineError as error:
            self._refuse(context, request, error)
            return
        await self._serve(generation, stream, context)

    async def session(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        message = None
        try:
            first = await anext(aiter(requests), None)
            if first is None:
                raise InvalidRequest("the session ended before its first message (`start`)")
            message = parse(pb.SessionRequest, first, "the first SessionRequest")
            if message.WhichOneof("kind") != "start":
                raise InvalidRequest("the first SessionRequest must be `start` (a GenerateRequest)")
            generation, stream = self._start(message.start)
        except EngineError as error:
            self._refuse(context, message.start if message is not None else None, error)
            return
        bad_control: list[EngineError] = []
        control = asyncio.create_task(self._control(requests, generation, bad_control))
        try:
            await self._serve(generation, stream, context)
        finally:
            control.cancel()
        if bad_control:
            _set_status(context, bad_control[0])

    async def _control(self, requests: AsyncIterator[bytes], generation: Generation, bad: list[EngineError]) -> None:
        async for raw in requests:
            try:
                message = parse(pb.SessionRequest, raw, "a SessionRequest control message")
                if message.WhichOneof("kind") != "control":
                    raise InvalidRequest("after `start`, a session takes only `control` messages")
                action = message.control.action
                if action == pb.Control.ACTION_STOP_GENERATING:
                    generation.stop(Cause.STOP_REQUEST)
                elif action == pb.Control.ACTION_KILL:
                    generation.kill(Cause.STOP_REQUEST)
                else:
                    raise InvalidRequest(f"unknown control action {action}")
            except EngineError as error:
                bad.append(error)
                generation.kill(Cause.STOP_REQUEST)
                return

    def _refuse(
        self, context: grpc.aio.ServicerContext[Any, Any], request: pb.GenerateRequest | None, error: EngineError
    ) -> None:
        """Answer a call refused before its generation started, and tell the `on_refused` callbacks."""
        _set_status(context, error)
        # Only a served engine's name is reported: a client-chosen name would make unbounded metric labels.
        engine = request.engine if request is not None and request.engine in self.registry else ""
        for callback in self._refused:
            callback(engine, error.code)

    def _start(self, request: pb.GenerateRequest) -> tuple[Generation, LocalStream[bytes]]:
        """Admit a generation and start its engine, or raise the EngineError that refuses it."""
        if self.draining:
            raise EngineError(Code.UNAVAILABLE, "the server is draining and accepts no new generations")
        engine = self.registry.get(request.engine)
        received = request.request.type_url
        received_name = received[received.rfind("/") + 1 :]
        if received_name != engine.request_type:
            raise InvalidRequest(
                f"engine {engine.name!r} expects a request of type {engine.request_type}, "
                f"received {received_name or 'an empty Any'}"
            )
        payload = parse(engine.request_class, request.request.value, "the request inside the Any")
        if request.request_id:
            problem = validate_request_id(request.request_id)
            if problem is not None:
                raise InvalidRequest(problem)
        generation = Generation(Context(request.request_id or None), engine.name)
        self.inflight.add(generation)
        try:
            stream = engine.stream(
                payload,
                generation.context,
                encode=self._encoders[engine.name],
                max_items=self._max_batch_items,
                max_bytes=self._max_batch_bytes,
            )
        except BaseException:
            self.inflight.remove(generation)
            raise
        # Only now: a generation reported as started is always reported as finished too.
        for callback in self._started:
            callback(generation)
        return generation, stream

    async def _serve(
        self, generation: Generation, stream: LocalStream[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        code = Code.UNKNOWN
        try:
            code = await self._write(generation, stream, context)
        except asyncio.CancelledError:
            # The client cancelled, went away, or its deadline passed: grpc cancels this handler's task.
            remaining = context.time_remaining()
            generation.kill(Cause.DEADLINE if remaining is not None and remaining <= 0 else Cause.CLIENT_CANCEL)
            code = Code.DEADLINE_EXCEEDED if generation.cause is Cause.DEADLINE else Code.CANCELLED
            raise
        finally:
            if not generation.context.is_done():
                generation.context.kill()
            if self._finished:
                # After this handler has wound down: a kill's cancellation and the final status go out first,
                # the bookkeeping (log line, metrics) after, yet before anyone waiting for an empty table.
                asyncio.get_running_loop().call_soon(self._report, generation, code)
            self.inflight.remove(generation)

    def _report(self, generation: Generation, code: Code) -> None:
        for callback in self._finished:
            callback(generation, code)

    async def _write(
        self, generation: Generation, stream: LocalStream[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Code:
        ctx = generation.context
        try:
            await context.send_initial_metadata(((REQUEST_ID_KEY, ctx.id),))
            while True:
                batch = await stream.next_batch()
                reason = stream.finish_reason
                if batch or reason is not None:
                    if generation.first_item_at is None and batch:
                        generation.first_item_at = asyncio.get_running_loop().time()
                    try:
                        await context.write(encode_response(batch, reason or 0))
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        # grpc raises its own internal error type when the call is gone: the client left.
                        generation.kill(Cause.CLIENT_CANCEL)
                        return Code.CANCELLED
                    generation.items += len(batch)
                    generation.messages += 1
                if reason is not None:
                    return Code.OK
                if not batch:
                    break
        except EngineError as error:
            if generation.cause is None and error.code is Code.ABORTED:
                generation.cause = Cause.ENGINE
            if error.code is Code.INTERNAL:
                error = EngineFailed(f"{error.message} (request id {ctx.id})")
            _set_status(context, error)
            return error.code
        # The stream ended quietly because the generation was killed on this side.
        if generation.cause is Cause.DRAIN:
            killed = EngineError(
                Code.UNAVAILABLE, f"the server is shutting down: generation {ctx.id!r} ran past the stop timeout"
            )
        else:
            killed = EngineError(Code.ABORTED, f"generation {ctx.id!r} was killed by a stop request")
        _set_status(context, killed)
        return killed.code

    # -- Stop / ListEngines ------------------------------------------------------------------------------------

    async def stop(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            request = parse(pb.StopRequest, raw, "the StopRequest")
            problem = validate_request_id(request.request_id)
            if problem is not None:
                raise InvalidRequest(problem)
            generation = self.inflight.get(request.request_id)
            if generation is None:
                raise EngineError(Code.NOT_FOUND, f"no generation with request id {request.request_id!r} is in flight")
        except EngineError as error:
            _set_status(context, error)
            return b""
        if request.kill:
            generation.kill(Cause.STOP_REQUEST)
        else:
            generation.stop(Cause.STOP_REQUEST)
        return b""

    async def list_engines(self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            request = parse(pb.ListEnginesRequest, raw, "the ListEnginesRequest")
            if request.name:
                self.registry.get(request.name)  # NOT_FOUND naming the engines served
                infos = [self._listing[request.name]]
            else:
                infos = list(self._listing.values())
        except EngineError as error:
            _set_status(context, error)
            return b""
        return pb.ListEnginesResponse(engines=infos).SerializeToString()

    # -- drain -------------------------------------------------------------------------------------------------

    async def drain(self, drain_timeout: float, stop_timeout: float) -> None:
        """Refuse new generations, let those in flight finish, then stop them, then kill what is left.

        In-flight streams get ``drain_timeout`` seconds to finish on their own, then a graceful stop
        (``stop_generating``: they end with FINISH_REASON_STOPPED), then ``stop_timeout`` seconds more before the
        rest are killed (their clients see UNAVAILABLE).
        """
        self.draining = True
        if await self.inflight.wait_empty(drain_timeout):
            return
        log.info("drain: %d generations still running after %.1fs; stopping them", len(self.inflight), drain_timeout)
        for generation in self.inflight:
            generation.stop(Cause.DRAIN)
        if await self.inflight.wait_empty(stop_timeout):
            return
        log.warning("drain: killing %d generations that ignored the stop for %.1fs", len(self.inflight), stop_timeout)
        for generation in self.inflight:
            generation.kill(Cause.DRAIN)
        await self.inflight.wait_empty(5.0)


def _engine_info(engine: LocalEngine) -> pb.EngineInfo:
    return pb.EngineInfo(
        name=engine.name,
        description=engine.description,
        request_type=engine.request_type,
        response_type=engine.response_type,
        error_type=engine.error_type or "",
        unary=engine.unary,
        descriptors=file_descriptor_set([engine.request_class, engine.response_class, engine.error_class]),
    )


def _set_status(context: grpc.aio.ServicerContext[Any, Any], error: EngineError) -> None:
    code = _GRPC_CODES[error.code]
    context.set_code(code)
    context.set_details(error.message)
    if error.detail is not None:
        detail = any_pb2.Any()
        detail.Pack(error.detail, type_url_prefix=TYPE_URL_PREFIX.rstrip("/"))
        status = status_pb2.Status(code=int(error.code), message=error.message, details=[detail])
        context.set_trailing_metadata(((STATUS_DETAILS_KEY, status.SerializeToString()),))


_GRPC_CODES = {Code(code.value[0]): code for code in grpc.StatusCode}
