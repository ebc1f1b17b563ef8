"""Remote engines: an `AnyEngine` whose generations run on a server, behind the same `ResponseStream` API.

A generation is one bidirectional ``Session`` call. The stream's context gets a linked child that turns the
context's methods into the call's: ``stop_generating()`` sends the in-band stop on the call itself (so it
reaches the replica serving it, whatever balancer sits in between) and ``kill()`` cancels the call. Nothing is
retried once a call has started (a generation is not idempotent), except a *resumable* engine's: a broken
stream of one continues on a new call from the items received (:mod:`.migration`). The call itself is the
transport's (:class:`~.transport.SessionCall`): this module speaks the protocol, not gRPC.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.server import tracing
from engine_runtime.server.context import Context
from engine_runtime.server.engine import AnyEngine, Engine, Req, Resp
from engine_runtime.server.errors import DataLoss, EngineError, EngineFailed
from engine_runtime.server.protocol import SERVED_BY_KEY, STOP_KEY_KEY, TYPE_URL_PREFIX, check_request_type
from engine_runtime.server.stream import FinishReason, ResponseStream

from .control import CallControl
from .migration import Migrations, Moves, Resend
from .types import TypeCatalog, descriptor_differs

if TYPE_CHECKING:
    from .transport import SessionCall, Transport

__all__ = ["RemoteEngine", "RemoteStream"]


class RemoteEngine(AnyEngine):
    """An engine served by a remote server, as :meth:`client.EngineClient.get` returns it.

    It is an :class:`~server.AnyEngine` like a local one: ``downcast`` it, ``generate`` with it, or register
    it in another server's registry to serve it again. Every generation it starts carries its ``priority``
    (``GenerateRequest.priority``: where the call stands in the engine's queue on a busy server, higher first).
    ``resumable`` is what the server reports; the streams of a resumable engine continue on another replica when
    theirs breaks (``migrations``, the client's policy).
    """

    def __init__(
        self,
        info: pb.EngineInfo,
        transport: Transport,
        timeout: float | None,
        priority: int = 0,
        migrations: Migrations | None = None,
    ) -> None:
        super().__init__(
            info.name,
            request_type=info.request_type,
            response_type=info.response_type,
            error_type=info.error_type or None,
            unary=info.unary,
            description=info.description,
            resumable=info.resumable,
        )
        self.info = info
        self.types = TypeCatalog(info.descriptors)
        self._transport = transport
        self._timeout = timeout
        self.priority = priority
        self._migrations = migrations if migrations is not None else Migrations()

    def with_priority(self, priority: int) -> RemoteEngine:
        """The same remote engine, its generations queued at ``priority`` (higher first, then oldest; 0 default).

        Example::

            urgent = (await client.get("echo")).with_priority(10).downcast(EchoRequest, EchoResponse)
            stream = await urgent.generate(EchoRequest(text="now"))
        """
        return RemoteEngine(self.info, self._transport, self._timeout, priority, self._migrations)

    def downcast(
        self, request: type[Req], response: type[Resp], error: type[Message] | None = None
    ) -> Engine[Req, Resp] | None:
        """As :meth:`AnyEngine.downcast`, by full name; a local class that the server describes differently
        under the same name is reported with a warning."""
        typed = super().downcast(request, response, error)
        if typed is not None:
            for cls in (request, response, error):
                if cls is not None:
                    descriptor_differs(cls, self.types)
        return typed

    async def generate(self, request: Message, context: Context | None = None) -> ResponseStream[Any]:
        """Start the generation on a replica; a context with ``resume_from`` N asks to continue after N items."""
        received = request.DESCRIPTOR.full_name
        check_request_type(self.name, self.request_type, received)
        context = context if context is not None else Context()
        response_class = self.types.message_class(self.response_type)
        error_class = self.types.message_class(self.error_type) if self.error_type else None
        span = tracing.client_span(self.name, context.id) if tracing.SWITCH.on else None
        start = pb.GenerateRequest(
            engine=self.name,
            request=any_pb2.Any(type_url=TYPE_URL_PREFIX + received, value=request.SerializeToString()),
            request_id=context.id,
            priority=self.priority,
            resume_from=context.resume_from,
        )
        resend = Resend(self._transport, start, error_class, self._timeout, span.headers if span else ())
        call = resend.call()
        moves = Moves(resend, self._migrations) if self.resumable else None
        stream = RemoteStream(call, context, self.name, response_class, span, moves=moves)
        try:
            await call.write(resend.start(0))
        except EngineError as error:
            if span is not None:
                span.end(None, error)  # the call failed before it started: no stream will end the span
            raise
        return stream


class RemoteStream(ResponseStream[Any]):
    """The responses of a remote generation; the same API as a local stream.

    A resumable engine's stream that breaks continues on a new call (up to the client's ``migration_limit``
    times): its consumer sees every item once and the real finish reason. Any other broken stream raises.
    """

    def __init__(
        self,
        call: SessionCall,
        context: Context,
        engine: str,
        response_class: type[Message],
        span: tracing.ClientSpan | None = None,
        *,
        moves: Moves | None = None,
    ) -> None:
        super().__init__(context)
        self._call = call
        self._engine = engine
        self._response_class = response_class
        self._response_url = TYPE_URL_PREFIX + response_class.DESCRIPTOR.full_name
        self._finish: FinishReason | None = None
        self._ended = False
        self._error: EngineError | None = None
        self._moves = moves
        self._received = 0  # items received since the first call
        self._control = CallControl(call)
        context.link_child(self._control)
        self._span = span
        if span is not None:
            context.link_child(span.events)

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._finish if self._ended else None

    async def stop_key(self) -> str:
        """The generation's ``x-stop-key``: what :meth:`EngineClient.stop` needs to stop it from elsewhere.

        ``""`` when the call ended before the server sent it (it was refused). After a migration, the key of
        the call now serving it.

        Example::

            stream = await engine.generate(request)
            key = await stream.stop_key()      # hand it, with stream.context.id, to whoever may stop it
        """
        return (await self._call.initial_metadata()).get(STOP_KEY_KEY, "")

    async def served_by(self) -> str:
        """The address of the replica running the generation (its ``x-served-by``); ``""`` if it was refused.

        Example::

            stream = await engine.generate(request)
            print(await stream.served_by())    # '10.1.2.3:50051': which replica of the fleet took it
        """
        return (await self._call.initial_metadata()).get(SERVED_BY_KEY, "")

    async def next_batch(self) -> list[Any]:
        while True:
            if self._ended:
                if self._error is not None:
                    raise self._error
                return []
            if self.context.is_killed():
                return self._end()
            try:
                reply = await self._read()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self.context.is_killed() and (task is None or not task.cancelling()):
                    # grpc raises CancelledError from read() when the call is cancelled under it: our own kill.
                    return self._end()
                raise
            except EngineError as error:
                if self.context.is_killed():
                    return self._end()
                if await self._migrate(error):
                    continue
                self._error = error
                self._end()
                raise
            items = [self._decode(item) for item in reply.items]
            self._received += len(items)
            if self._span is not None:
                self._span.items += len(items)
            if reply.finish_reason:
                self._finish = FinishReason(reply.finish_reason)
                self._end()
            if items or self._ended:
                return items

    async def _read(self) -> pb.GenerateResponse:
        """The next response; a call that ended without a finish reason raises what its status stands for."""
        reply = await self._call.read()
        if reply is not None:
            return reply
        error = await self._call.status()
        if error is None:
            raise DataLoss(f"the stream of engine {self._engine!r} ended without a finish reason")
        raise error

    async def _migrate(self, error: EngineError) -> bool:
        """Continue the generation on a new call after ``error``, if it may; tell whether it did."""
        if self._moves is None:
            return False
        call = await self._moves.next_call(error, self._call, self._engine, self.context, self._received)
        if call is None:
            return False
        self._call = call
        self._control.switch(call)
        return True

    def _decode(self, item: any_pb2.Any) -> Any:
        if item.type_url != self._response_url:
            self._call.cancel()
            raise EngineFailed(
                f"engine {self._engine!r} sent a {item.type_url} where {self._response_url} was expected"
            )
        try:
            return self._response_class.FromString(item.value)
        except DecodeError:
            self._call.cancel()
            raise DataLoss(f"a response of engine {self._engine!r} does not parse as {self._response_url}") from None

    def _end(self) -> list[Any]:
        self._ended = True
        if self._span is not None:
            self._span.end(self._finish.name.lower() if self._finish else None, self._error)
        self.context.mark_done()
        return []

    async def aclose(self) -> None:
        if not self._ended:
            self.context.kill()
            self._end()

    def __del__(self) -> None:
        # A consumer that dropped its stream is gone: the remote generation must not run on for nobody.
        if not self._ended and not self._call.done():
            self._call.cancel()
            if self._span is not None:
                self._span.events.kill()
                self._span.end(None, None)
