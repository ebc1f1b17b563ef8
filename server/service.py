"""The gRPC servicer of `engine.v1.EngineService`: the only server module that serves calls with grpc.aio.

Each call runs as request -> parse -> registry lookup and type check -> admission (a slot, or a wait in the
engine's queue: :mod:`.admission`) -> engine (a pump task) -> coalescing writer -> wire. The handlers are
write-style coroutines over raw bytes:

- raw bytes in, so that a request that does not parse is answered INVALID_ARGUMENT naming what failed (grpc's
  own deserializer would answer UNKNOWN);
- raw bytes out, framed by :mod:`.wire` without building an ``Any`` per item;
- ``context.write`` rather than an async-generator handler, because a client cancel then reaches the handler
  at once (as ``CancelledError``, or an error from ``write``) and its ``finally`` kills the generation
  deterministically within about a millisecond.

Every generation ends in :meth:`EngineService._serve` as one :class:`~.outcome.Ending`; the status sent, the
log line and the metrics are all read from it, and :func:`~.admin_service.set_status` puts it on the call. The
unary calls (``Stop``, ``ListEngines``) are :mod:`.admin_service`'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from engine_runtime.generated.engine.v1 import engine_pb2 as pb

from .admin_service import AdminCalls, set_status
from .admission import Place
from .budget import DEFAULT_MAX_OUTPUT_BYTES, OutputBudget
from .context import Context, validate_request_id
from .engine import LocalEngine
from .errors import Code, EngineError, EngineFailed, InvalidRequest, Unavailable
from .inflight import Generation, InFlight
from .outcome import Cause, Ending, How, status_of
from .protocol import (
    CONTINUE_ELSEWHERE_KEY,
    SERVED_BY_KEY,
    SERVICE_NAME,
    check_request_type,
    type_name,
)
from .pump import DEFAULT_KILL_TIMEOUT, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_ITEMS, LocalStream
from .registry import EngineRegistry
from .wire import item_encoder, parse
from .writer import initial_metadata, write_generation, write_unstarted

__all__ = ["EngineService"]

log = logging.getLogger("engine_runtime.service")

DEADLINE_SLACK = 0.005
"""Seconds before its deadline within which a cancelled call counts as one whose deadline passed."""

ServicerContext = grpc.aio.ServicerContext[Any, Any]
Finished = Callable[[Generation, Code], None]
Refused = Callable[[str, EngineError], None]
Called = Callable[[tuple[tuple[str, str | bytes], ...], pb.GenerateRequest], None]
Admitted = tuple[Generation, LocalEngine, Any, Place | None]  # its place in the queue, or None: it runs now


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
        self._served_by: tuple[tuple[str, str], ...] = ()  # the x-served-by of every generation's metadata
        self._max_message_bytes = max_message_bytes
        # What each engine's pump gets; the batch leaves room for the message's framing under grpc's size limit.
        max_batch_bytes = max(1, min(DEFAULT_MAX_BATCH_BYTES, max_message_bytes // 2))
        self._pump: dict[str, Any] = {"max_items": max_batch_items, "max_bytes": max_batch_bytes}
        self._pump.update(kill_timeout=kill_timeout, budget=self.output)
        self._encoders = {
            engine.name: item_encoder(engine.response_class, engine.check_response) for engine in registry
        }
        self.admin = AdminCalls(registry, self.inflight)
        self._finished: list[Finished] = []
        self._refused: list[Refused] = []
        self._called: list[Called] = []

    @property
    def served_by(self) -> str:
        """This replica's address, sent as ``x-served-by`` (set once the server listens; ``""``: not sent)."""
        return self._served_by[0][1] if self._served_by else ""

    @served_by.setter
    def served_by(self, address: str) -> None:
        self._served_by = ((SERVED_BY_KEY, address),) if address else ()

    def on_call(self, callback: Called) -> None:
        """Call ``callback(metadata, request)`` in a call's task before its engine starts (which inherits it)."""
        self._called.append(callback)

    def on_started(self, callback: Callable[[Generation], None]) -> None:
        """Call ``callback(generation)`` when a generation takes a slot and its engine starts (for metrics)."""
        self.inflight.admission.on_admitted(callback)

    def on_refused(self, callback: Refused) -> None:
        """Call ``callback(engine, error)`` for a Generate/Session call refused before its generation started.

        ``engine`` is the engine's name when the call named a served engine, else ``""``.
        """
        self._refused.append(callback)

    def on_finished(self, callback: Finished) -> None:
        """Call ``callback(generation, code)`` once for every generation, queued ones too; ``ending`` says how."""
        self._finished.append(callback)

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to add to a ``grpc.aio.Server``."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Generate": grpc.unary_stream_rpc_method_handler(self.generate),
                "Session": grpc.stream_stream_rpc_method_handler(self.session),
                "Stop": grpc.unary_unary_rpc_method_handler(self.admin.stop),
                "ListEngines": grpc.unary_unary_rpc_method_handler(self.admin.list_engines),
            },
        )

    # -- Generate / Session ------------------------------------------------------------------------------------

    async def generate(self, raw: bytes, context: ServicerContext) -> None:
        request = None
        try:
            request = parse(pb.GenerateRequest, raw, "the GenerateRequest")
            self._call(context, request)
            admitted = self._admit(request)
        except EngineError as error:
            self._refuse(context, request, error)
            return
        await self._serve(admitted, context)

    async def session(self, requests: AsyncIterator[bytes], context: ServicerContext) -> None:
        message = None
        try:
            first = await anext(aiter(requests), None)
            if first is None:
                raise InvalidRequest("the session ended before its first message (`start`)")
            message = parse(pb.SessionRequest, first, "the first SessionRequest")
            if message.WhichOneof("kind") != "start":
                raise InvalidRequest("the first SessionRequest must be `start` (a GenerateRequest)")
            self._call(context, message.start)
            admitted = self._admit(message.start)
        except EngineError as error:
            self._refuse(context, message.start if message is not None else None, error)
            return
        bad_control: list[EngineError] = []
        control = asyncio.create_task(self._control(requests, admitted[0], bad_control))
        try:
            await self._serve(admitted, context)
        finally:
            control.cancel()
        if bad_control:
            set_status(context, bad_control[0])

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

    def _call(self, context: ServicerContext, request: pb.GenerateRequest) -> None:
        for callback in self._called:  # tracing: no callback, no metadata read
            callback(tuple(context.invocation_metadata() or ()), request)

    def _refuse(self, context: ServicerContext, request: pb.GenerateRequest | None, error: EngineError) -> None:
        """Answer a call refused before its generation started, and tell the `on_refused` callbacks."""
        # Nothing ran: a limit or a drain invites a retry elsewhere; bad input, unknown engines, duplicates none.
        set_status(context, error, pushback=True)
        # Only a served engine's name is reported: a client-chosen name would make unbounded metric labels.
        engine = request.engine if request is not None and request.engine in self.registry else ""
        for callback in self._refused:
            callback(engine, error)

    def _admit(self, request: pb.GenerateRequest) -> Admitted:
        """The call's generation, admitted (a slot, or a place in the queue); or raise the error refusing it."""
        if self.draining:
            raise Unavailable("the server is draining and accepts no new generations")
        engine = self.registry.get(request.engine)
        check_request_type(engine.name, engine.request_type, type_name(request.request.type_url))
        payload = parse(engine.request_class, request.request.value, "the request inside the Any")
        engine.check_resume(request.resume_from)
        if request.request_id:
            problem = validate_request_id(request.request_id)
            if problem is not None:
                raise InvalidRequest(problem)
        context = Context(request.request_id or None, resume_from=request.resume_from)
        generation = Generation(context, engine.name, request.priority, resumable=engine.resumable)
        return generation, engine, payload, self.inflight.add(generation)

    async def _start(self, admitted: Admitted) -> LocalStream[bytes]:
        generation, engine, payload, _ = admitted
        return await engine.generate(payload, generation.context, encode=self._encoders[engine.name], **self._pump)

    async def _serve(self, admitted: Admitted, context: ServicerContext) -> None:
        """Run one generation to its end, and end it: one :class:`Ending`, one status, one report."""
        generation, place = admitted[0], admitted[3]
        stream: LocalStream[bytes] | None = None
        try:
            if place is None:  # admitted at once: the engine gets going while the initial metadata is sent
                stream = await self._start(admitted)
            # At once, even for a call that waits: its client learns the id and stop key, and can Stop it there.
            await context.send_initial_metadata(initial_metadata(generation, self._served_by))
            if place is not None:
                ending = await self.inflight.admission.wait(place, context.time_remaining())
                if ending is not None:  # it left the queue without running
                    generation.end(await write_unstarted(generation, context, ending))
                    return
                stream = await self._start(admitted)
            assert stream is not None  # started above, at once or after the queue
            generation.end(await write_generation(generation, stream, context, self._max_message_bytes))
        except asyncio.CancelledError:
            # The client cancelled, went away, or its deadline passed: grpc cancels this handler's task.
            if generation.finishing is not None:
                # It came while the final message was being written: the client had it all, then left.
                generation.end(generation.finishing)
                raise
            remaining = context.time_remaining()
            # grpc may cancel a moment before the deadline by the server's clock: within a few ms, it is the deadline.
            cause = Cause.DEADLINE if remaining is not None and remaining < DEADLINE_SLACK else Cause.CLIENT_CANCEL
            generation.kill(cause)  # a queued generation leaves the queue here, at once
            generation.end(Ending(How.KILLED, cause))
            if stream is not None:
                # One loop turn for the engine's task, woken by the kill, to reach its `finally` before this call's
                # bookkeeping below: when a connection drops, its calls' kills all land before their bookkeeping.
                await asyncio.sleep(0)
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
                # A call whose engine never ran carries a retry pushback (committed, so grpc itself will not retry);
                # a hand-off says where the client's copy of the stream stands: the resume_from to send next.
                handed_off = ((CONTINUE_ELSEWHERE_KEY, str(generation.position)),) if ending.how is How.MIGRATED else ()
                set_status(context, error, generation.admitted_at is None, handed_off)
            if self._finished:
                # After this handler has wound down: a kill's cancellation and the final status go out first,
                # the bookkeeping (log line, metrics) after, yet before anyone waiting for an empty table.
                asyncio.get_running_loop().call_soon(self._report, generation, ending.code)
            if stream is not None:
                stream.release_budget()  # whatever the call did not get to write
            self.inflight.remove(generation)

    def _report(self, generation: Generation, code: Code) -> None:
        for callback in self._finished:
            callback(generation, code)
