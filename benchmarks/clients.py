"""The client side: one interface over both servers, built on raw grpc.aio stubs (no client library yet).

Both clients start the same work (``count`` items of ``size`` characters, ``delay_s`` apart) and tell how
many items a received message holds without decoding the items themselves: the bare server sends one item
per message (left as raw bytes), the project server packs ready items into one ``GenerateResponse``
(``len(response.items)``).
"""

from __future__ import annotations

import abc
import json
from typing import Any, cast

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from google.protobuf.struct_pb2 import Struct

from engine_runtime.generated.engine.v1 import engine_pb2, engine_pb2_grpc
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse

from . import bare_server

__all__ = ["BareClient", "Call", "Client", "ProjectClient", "connect", "generate_request"]

Call = grpc.aio.UnaryStreamCall[Any, Any]
RawStream = grpc.aio.UnaryStreamMultiCallable[bytes, bytes]
Generate = grpc.aio.UnaryStreamMultiCallable[engine_pb2.GenerateRequest, engine_pb2.GenerateResponse]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def channel(address: str, private: bool = False) -> grpc.aio.Channel:
    """A channel to ``address``; ``private`` gives it a TCP connection of its own, like a separate client."""
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    if private:
        # Channels with equal arguments otherwise share one connection (grpc's global subchannel pool).
        options.append(("grpc.use_local_subchannel_pool", 1))
    return grpc.aio.insecure_channel(address, options=options)


class Client(abc.ABC):
    """A connection to one server under test."""

    kind: str

    def __init__(self, address: str, private: bool = False) -> None:
        self.address = address
        self.channel = channel(address, private)

    @abc.abstractmethod
    def count(self, count: int, size: int = 16, delay_s: float = 0.0, *, timeout: float, variant: str = "") -> Call:
        """Start ``count`` items of ``size`` characters, ``delay_s`` apart (0: flat out), with a deadline.

        ``variant="generator"`` picks the bare server's async-generator handler, ``variant="metadata"`` its handler
        that sends initial metadata of its own first (both ignored by the project).
        """

    @abc.abstractmethod
    def stamped(self, count: int, delay_s: float, *, timeout: float) -> Call:
        """Start ``count`` items ``delay_s`` apart, each carrying the server's ``time.time()`` when it was made."""

    @abc.abstractmethod
    def stamps(self, message: Any) -> list[float]:
        """The times carried by the items of a message of a ``stamped`` stream."""

    @abc.abstractmethod
    def probe(self, request_id: str, count: int, delay_s: float, *, timeout: float) -> Call:
        """Start a cancel probe: a paced stream that records when it is killed, under ``request_id``."""

    @abc.abstractmethod
    async def kill_times(self) -> dict[str, float]:
        """``{request_id: time.time() when the server-side work saw its kill}`` for the probes so far."""

    @staticmethod
    @abc.abstractmethod
    def items_in(message: Any) -> int:
        """How many items a received message carries."""

    @staticmethod
    def completed(message: Any) -> bool:
        """Whether a stream whose last message is ``message`` says it completed (where the wire says so)."""
        return True

    async def close(self) -> None:
        await self.channel.close()


class BareClient(Client):
    """The bare grpc.aio server of :mod:`benchmarks.bare_server`."""

    kind = "bare"

    def __init__(self, address: str, private: bool = False) -> None:
        super().__init__(address, private)
        # No deserializer: messages stay raw bytes, one item each, never decoded.
        self._count: RawStream = self.channel.unary_stream(bare_server.COUNT)
        self._count_gen: RawStream = self.channel.unary_stream(bare_server.COUNT_GEN)
        self._count_meta: RawStream = self.channel.unary_stream(bare_server.COUNT_META)
        self._stamped: RawStream = self.channel.unary_stream(bare_server.STAMPED)
        self._probe: RawStream = self.channel.unary_stream(bare_server.PROBE)
        self._probe_times: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(
            bare_server.PROBE_TIMES
        )

    def count(self, count: int, size: int = 16, delay_s: float = 0.0, *, timeout: float, variant: str = "") -> Call:
        method = {"generator": self._count_gen, "metadata": self._count_meta}.get(variant, self._count)
        return method(CountRequest(count=count, size=size, delay_s=delay_s).SerializeToString(), timeout=timeout)

    def stamped(self, count: int, delay_s: float, *, timeout: float) -> Call:
        return self._stamped(CountRequest(count=count, delay_s=delay_s).SerializeToString(), timeout=timeout)

    def stamps(self, message: Any) -> list[float]:
        return [float(CountResponse.FromString(message).payload)]

    def probe(self, request_id: str, count: int, delay_s: float, *, timeout: float) -> Call:
        request = CountRequest(count=count, delay_s=delay_s).SerializeToString()
        return self._probe(request, metadata=((bare_server.REQUEST_ID_KEY, request_id),), timeout=timeout)

    async def kill_times(self) -> dict[str, float]:
        raw = await self._probe_times(b"", timeout=10)
        return {str(k): float(v) for k, v in json.loads(raw).items()}

    @staticmethod
    def items_in(message: Any) -> int:
        return 1


class ProjectClient(Client):
    """The project's ``engine-server``, through ``engine.v1.EngineService`` (the generated message classes)."""

    kind = "project"

    def __init__(self, address: str, private: bool = False) -> None:
        super().__init__(address, private)
        self._generate: Generate = engine_pb2_grpc.EngineServiceStub(self.channel).Generate

    def _start(self, engine: str, request: Message, timeout: float, request_id: str = "") -> Call:
        message = generate_request(engine, request, request_id)
        return self._generate(message, timeout=timeout)

    def count(self, count: int, size: int = 16, delay_s: float = 0.0, *, timeout: float, variant: str = "") -> Call:
        return self._start("count", CountRequest(count=count, size=size, delay_s=delay_s), timeout)

    def stamped(self, count: int, delay_s: float, *, timeout: float) -> Call:
        return self._start("stamped", CountRequest(count=count, delay_s=delay_s), timeout)

    def stamps(self, message: Any) -> list[float]:
        stamps = []
        for item in message.items:
            response = CountResponse()
            item.Unpack(response)
            stamps.append(float(response.payload))
        return stamps

    def probe(self, request_id: str, count: int, delay_s: float, *, timeout: float) -> Call:
        return self._start("cancel_probe", CountRequest(count=count, delay_s=delay_s), timeout, request_id)

    async def kill_times(self) -> dict[str, float]:
        times: dict[str, float] = {}
        async for message in self._generate(generate_request("kill_times", Empty()), timeout=10):
            for item in message.items:
                result = Struct()
                item.Unpack(result)
                times.update({str(k): float(cast(float, v)) for k, v in result.items()})
        return times

    @staticmethod
    def items_in(message: Any) -> int:
        return len(message.items)

    @staticmethod
    def completed(message: Any) -> bool:
        return bool(message.finish_reason == engine_pb2.FINISH_REASON_COMPLETED)


def generate_request(engine: str, message: Message, request_id: str = "") -> engine_pb2.GenerateRequest:
    """A ``GenerateRequest`` for ``engine`` carrying ``message`` (packed in its ``Any``)."""
    packed = AnyMessage()
    packed.Pack(message)
    return engine_pb2.GenerateRequest(engine=engine, request=packed, request_id=request_id)


def connect(kind: str, address: str, private: bool = False) -> Client:
    """A client of the ``kind`` ("bare" or "project") of server at ``address``."""
    if kind == "bare":
        return BareClient(address, private)
    if kind == "project":
        return ProjectClient(address, private)
    raise ValueError(f"unknown server kind {kind!r}")
