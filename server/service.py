"""The gRPC servicer of `engine.v1.EngineService`: the only server module that serves calls with grpc.aio.

Each call runs as request -> parse -> registry lookup and type check -> engine (a pump task) -> coalescing
writer -> wire. The handlers are write-style coroutines over raw bytes:

- raw bytes in, so that a request that does not parse is answered INVALID_ARGUMENT naming what failed (grpc's
  own deserializer would answer UNKNOWN);
- raw bytes out, framed by :mod:`.wire` without building an ``Any`` per item;
- ``context.write`` rather than an async-generator handler, because a client cancel then reaches the handler
  at once (as ``CancelledError``, or an error from ``write``) and its ``finally`` kills the generation
  deterministically within about a millisecond.

Every generation ends in :meth:`EngineService._serve` as one :class:`~.outcome.Ending`; the status sent, the
log line and the metrics are all read from it. Statuses are set with ``set_code``/``set_details`` and a normal
return, never ``abort``: an abort is an exception that a broad handler could swallow.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from engine_runtime.generated.engine.v1 import engine_pb2 as pb

from .budget import DEFAULT_MAX_OUTPUT_BYTES, OutputBudget
from .context import Context, validate_request_id
from .descriptors import engine_info
from .errors import Code, EngineError, EngineFailed, EngineNotFound, InvalidRequest, Unavailable
from .inflight import Generation, InFlight
from .outcome import Cause, Ending, How, status_of
from .protocol import (
    PUSHBACK_KEY,
    SERVED_BY_KEY,
    SERVICE_NAME,
    STATUS_DETAILS_KEY,
    check_request_type,
    status_trailer,
    type_name,
)
from .pump import DEFAULT_KILL_TIMEOUT, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_ITEMS, LocalStream
from .registry import EngineRegistry
from .wire import item_encoder, parse
from .writer import write_generation

__all__ = ["EngineService"]

log = logging.getLogger("engine_runtime.service")

DEADLINE_SLACK = 0.005
"""Seconds before its deadline within which a cancelled call counts as one whose deadline passed."""
RETRY_PUSHBACK_MS = 50
"""A refusal another replica may take (a limit reached, a drain) tells clients to retry after this (gRFC A6)."""
_RETRYABLE = (Code.RESOURCE_EXHAUSTED, Code.UNAVAILABLE)

ServicerContext = grpc.aio.ServicerContext[Any, Any]
Finished = Callable[[Generation, Code], None]
Refused = Callable[[str, EngineError], None]


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
        kill_timeout: float = DEFAULT_KILL_TIMEOUT,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
    ) -> None:
        self.registry = registry
        self.output = OutputBudget(max_output_bytes)
        self.kill_timeout = kill_timeout
        self.inflight = inflight if inflight is not None else InFlight()
        self.draining = False
        self.served_by = ""  # this replica's address, sent as x-served-by (set once the server listens)
        # Leave room for the message's own framing under grpc's size limit.
        self._max_batch_bytes = max(1, min(DEFAULT_MAX_BATCH_BYTES, max_message_bytes // 2))
        self._max_message_bytes = max_message_bytes
        self._max_batch_items = max_batch_items
        self._encoders = {
            engine.name: item_encoder(engine.response_class, engine.check_response) for engine in registry
        }
        self._listing = {engine.name: engine_info(engine) for engine in registry}
        self._finished: list[Finished] = []
        self._started: list[Callable[[Generation], None]] = []
        self._refused: list[Refused] = []

    def on_started(self, callback: Callable[[Generation], None]) -> None:
        """Call ``callback(generation)`` when a generation is admitted (for metrics)."""
        self._started.append(callback)

    def on_refused(self, callback: Refused) -> None:
        """Call ``callback(engine, error)`` for a Generate/Session call refused before its generation started.

        ``engine`` is the engine's name when the call named a served engine, else ``""``.
        """
        self._refused.append(callback)

    def on_finished(self, callback: Finished) -> None:
        """Call ``callback(generation, code)`` once for every generation; ``generation.ending`` says how it ended."""
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

    async def generate(self, raw: bytes, context: ServicerContext) -> None:
        request = None
        try:
            request = parse(pb.GenerateRequest, raw, "the GenerateRequest")
            generation, stream = await self._start(request)
        except EngineError as error:
            self._refuse(context, request, error)
            return
        await self._serve(generation, stream, context)

    async def session(self, requests: AsyncIterator[bytes], context: ServicerContext) -> None:
        message = None
        try:
            first = await anext(aiter(requests), None)
            if first is None:
                raise InvalidRequest("the session ended before its first message (`start`)")
            message = parse(pb.SessionRequest, first, "the first SessionRequest")
            if message.WhichOneof("kind") != "start":
                raise InvalidRequest("the first SessionRequest must be `start` (a GenerateRequest)")
            generation, stream = await self._start(message.start)
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

    def _refuse(self, context: ServicerContext, request: pb.GenerateRequest | None, error: EngineError) -> None:
        """Answer a call refused before its generation started, and tell the `on_refused` callbacks."""
        # Nothing ran: a limit or a drain invites a retry elsewhere; bad input, unknown engines, duplicates none.
        pushback = RETRY_PUSHBACK_MS if error.code in _RETRYABLE else -1
        _set_status(context, error, ((PUSHBACK_KEY, str(pushback)),))
        # Only a served engine's name is reported: a client-chosen name would make unbounded metric labels.
        engine = request.engine if request is not None and request.engine in self.registry else ""
        for callback in self._refused:
            callback(engine, error)

    async def _start(self, request: pb.GenerateRequest) -> tuple[Generation, LocalStream[bytes]]:
        """Admit a generation and start its engine, or raise the EngineError that refuses it."""
        if self.draining:
            raise Unavailable("the server is draining and accepts no new generations")
        engine = self.registry.get(request.engine)
        check_request_type(engine.name, engine.request_type, type_name(request.request.type_url))
        payload = parse(engine.request_class, request.request.value, "the request inside the Any")
        if request.request_id:
            problem = validate_request_id(request.request_id)
            if problem is not None:
                raise InvalidRequest(problem)
        generation = Generation(Context(request.request_id or None), engine.name)
        self.inflight.add(generation)
        try:
            stream = await engine.generate(
                payload,
                generation.context,
                encode=self._encoders[engine.name],
                max_items=self._max_batch_items,
                max_bytes=self._max_batch_bytes,
                kill_timeout=self.kill_timeout,
                budget=self.output,
            )
        except BaseException:
            self.inflight.remove(generation)
            raise
        # Only now: a generation reported as started is always reported as finished too.
        for callback in self._started:
            callback(generation)
        return generation, stream

    async def _serve(self, generation: Generation, stream: LocalStream[bytes], context: ServicerContext) -> None:
        """Run one generation to its end, and end it: one :class:`Ending`, one status, one report."""
        try:
            served_by = ((SERVED_BY_KEY, self.served_by),) if self.served_by else ()
            generation.end(await write_generation(generation, stream, context, self._max_message_bytes, served_by))
        except asyncio.CancelledError:
            # The client cancelled, went away, or its deadline passed: grpc cancels this handler's task.
            if generation.finishing is not None:
                # It came while the final message was being written: the client had it all, then left.
                generation.end(generation.finishing)
                raise
            remaining = context.time_remaining()
            # grpc may cancel a moment before the deadline by the server's clock: within a few ms, it is the deadline.
            cause = Cause.DEADLINE if remaining is not None and remaining < DEADLINE_SLACK else Cause.CLIENT_CANCEL
            generation.kill(cause)
            generation.end(Ending(How.KILLED, cause))
            raise
        finally:
            if not generation.context.is_done():
                generation.context.kill()
            if generation.ending is None:
                # Only a bug gets here: the call still ends with a status, and the log says so.
                log.error("generation %s ended without an ending", generation.id, extra={"request_id": generation.id})
                generation.end(Ending(How.FAILED, generation.cause, EngineFailed("the server failed this call")))
            ending = generation.ending
            assert ending is not None
            error = status_of(ending, generation.id)
            if error is not None:
                _set_status(context, error)
            if self._finished:
                # After this handler has wound down: a kill's cancellation and the final status go out first,
                # the bookkeeping (log line, metrics) after, yet before anyone waiting for an empty table.
                asyncio.get_running_loop().call_soon(self._report, generation, ending.code)
            stream.release_budget()  # whatever the call did not get to write
            self.inflight.remove(generation)

    def _report(self, generation: Generation, code: Code) -> None:
        for callback in self._finished:
            callback(generation, code)

    # -- Stop / ListEngines ------------------------------------------------------------------------------------

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
            _set_status(context, error)
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
            _set_status(context, error)
            return b""
        return pb.ListEnginesResponse(engines=infos).SerializeToString()


def _set_status(context: ServicerContext, error: EngineError, metadata: tuple[tuple[str, Any], ...] = ()) -> None:
    context.set_code(grpc.StatusCode[error.code.name])
    context.set_details(error.message)
    trailer = status_trailer(error)
    if trailer is not None:
        metadata = (*metadata, (STATUS_DETAILS_KEY, trailer))
    if metadata:
        context.set_trailing_metadata(metadata)
