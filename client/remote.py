"""Remote engines: an `AnyEngine` whose generations run on a server, behind the same `ResponseStream` API.

A generation is one bidirectional ``Session`` call. The stream's context gets a linked child that turns the
context's methods into the call's: ``stop_generating()`` sends the in-band stop on the call itself (so it
reaches the replica serving it, whatever balancer sits in between) and ``kill()`` cancels the call. Nothing is
retried once a call has started: a generation is not idempotent. The call itself is the transport's
(:class:`~.transport.SessionCall`): this module speaks the protocol, not gRPC.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.server.context import Context
from engine_runtime.server.engine import AnyEngine, Engine, Req, Resp
from engine_runtime.server.errors import DataLoss, EngineError, EngineFailed
from engine_runtime.server.protocol import SERVED_BY_KEY, STOP_KEY_KEY, TYPE_URL_PREFIX, check_request_type
from engine_runtime.server.stream import FinishReason, ResponseStream

from .types import TypeCatalog, descriptor_differs

if TYPE_CHECKING:
    from .transport import SessionCall, Transport

__all__ = ["RemoteEngine", "RemoteStream"]

_STOP = pb.SessionRequest(control=pb.Control(action=pb.Control.ACTION_STOP_GENERATING)).SerializeToString()


class RemoteEngine(AnyEngine):
    """An engine served by a remote server, as :meth:`client.EngineClient.get` returns it.

    It is an :class:`~server.AnyEngine` like a local one: ``downcast`` it, ``generate`` with it, or register
    it in another server's registry to serve it again.
    """

    def __init__(self, info: pb.EngineInfo, transport: Transport, timeout: float | None) -> None:
        super().__init__(
            info.name,
            request_type=info.request_type,
            response_type=info.response_type,
            error_type=info.error_type or None,
            unary=info.unary,
            description=info.description,
        )
        self.info = info
        self.types = TypeCatalog(info.descriptors)
        self._transport = transport
        self._timeout = timeout

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
        received = request.DESCRIPTOR.full_name
        check_request_type(self.name, self.request_type, received)
        context = context if context is not None else Context()
        response_class = self.types.message_class(self.response_type)
        error_class = self.types.message_class(self.error_type) if self.error_type else None
        call = self._transport.session(self.name, error_class, self._timeout)
        start = pb.SessionRequest(
            start=pb.GenerateRequest(
                engine=self.name,
                request=any_pb2.Any(type_url=TYPE_URL_PREFIX + received, value=request.SerializeToString()),
                request_id=context.id,
            )
        )
        stream = RemoteStream(call, context, self.name, response_class)
        await call.write(start.SerializeToString())
        return stream


class _CallControl:
    """Linked under the stream's context: stop is the in-band control message, kill cancels the call."""

    __slots__ = ("call", "writes")

    def __init__(self, call: SessionCall) -> None:
        self.call = call
        self.writes: set[asyncio.Task[None]] = set()

    def stop_generating(self) -> None:
        if self.call.done() or self.writes:
            return
        task = asyncio.get_running_loop().create_task(self.call.try_write(_STOP))
        self.writes.add(task)

    stop = stop_generating

    def kill(self) -> None:
        self.call.cancel()

    def is_stopped(self) -> bool:
        return bool(self.writes) or self.call.done()

    def is_killed(self) -> bool:
        return self.call.cancelled()


class RemoteStream(ResponseStream[Any]):
    """The responses of a remote generation; the same API as a local stream."""

    def __init__(self, call: SessionCall, context: Context, engine: str, response_class: type[Message]) -> None:
        super().__init__(context)
        self._call = call
        self._engine = engine
        self._response_class = response_class
        self._response_url = TYPE_URL_PREFIX + response_class.DESCRIPTOR.full_name
        self._finish: FinishReason | None = None
        self._ended = False
        self._error: EngineError | None = None
        context.link_child(_CallControl(call))

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._finish if self._ended else None

    async def stop_key(self) -> str:
        """The generation's ``x-stop-key``: what :meth:`EngineClient.stop` needs to stop it from elsewhere.

        ``""`` when the call ended before the server sent it (it was refused).

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
                reply = await self._call.read()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self.context.is_killed() and (task is None or not task.cancelling()):
                    # grpc raises CancelledError from read() when the call is cancelled under it: our own kill.
                    return self._end()
                raise
            except EngineError as error:
                if self.context.is_killed():
                    return self._end()
                self._error = error
                self._end()
                raise
            if reply is None:
                await self._closed()
                continue
            items = [self._decode(item) for item in reply.items]
            if reply.finish_reason:
                self._finish = FinishReason(reply.finish_reason)
                self._end()
            if items or self._ended:
                return items

    async def _closed(self) -> None:
        """The call ended: fine after a finish reason; otherwise its status is the error."""
        error = await self._call.status()
        if error is None and self._finish is None:
            self._error = DataLoss(f"the stream of engine {self._engine!r} ended without a finish reason")
        elif error is not None and not self.context.is_killed():
            self._error = error
        self._end()

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
