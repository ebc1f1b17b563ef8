"""Channels to one or more servers, and the calls made on them: the only client module that speaks grpc.aio.

It knows targets, TLS, bearer tokens, the connect timeout and the balancing of :mod:`.routing` (weighted
round-robin and retries over a fleet target, each replica reachable by address for ``Stop``), and it turns every
failed call into the :class:`~engine_runtime.server.errors.EngineError` subclass of its status (with the engine's typed
detail decoded), so the rest of the client deals in engine terms only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.server.errors import EngineError, Unavailable
from engine_runtime.server.protocol import SESSION, error_from_status

from .routing import (
    FLEET_SERVICE_CONFIG,
    SINGLE_SERVICE_CONFIG,
    channel_targets,
    dns_name,
    is_fleet,
    replica_addresses,
)

__all__ = ["SessionCall", "Transport"]

_CORE_FAILURE = "Internal error from Core"

M = TypeVar("M", bound=Message)


class Transport:
    """One channel per target (IP literals joined into one ``ipv4:`` target), calls spread over them in turn;
    within a fleet target (:func:`.routing.is_fleet`) grpc's weighted round-robin picks the replica."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        token: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        if not targets:
            raise ValueError("at least one target is needed")
        self.targets = channel_targets(list(targets))
        self._credentials = _credentials(tls_ca, tls_cert, tls_key)
        self._options = list(options)
        self.channels = [
            self._channel(t, FLEET_SERVICE_CONFIG if is_fleet(t) else SINGLE_SERVICE_CONFIG) for t in self.targets
        ]
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._turn = itertools.cycle(range(len(self.channels)))
        self._by_address: dict[str, grpc.aio.Channel] = {}

    def _channel(self, target: str, service_config: str, extra: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        defaults = [
            ("grpc.service_config", service_config),
            # A frozen replica (SIGSTOP, a hung host) is found by an unanswered ping: within the ping timeout while
            # data flows (grpc's own flow-control pings), within keepalive time + timeout on an idle stream. 10 s
            # stays above the server's ping policy (5 s, server/options.py); docs/client.md has the measurements.
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.ping_timeout_ms", 5_000),
            # By default a client stops pinging after two pings without sending data, which a server-streaming
            # call never does: an idle stream's frozen replica was then found only after about a minute.
            ("grpc.http2.max_pings_without_data", 0),
            *extra,
        ]
        # The caller's options win (grpc would take the first of two values): e.g. a service config of its own.
        given = {key for key, _ in self._options}
        options = [*(option for option in defaults if option[0] not in given), *self._options]
        if self._credentials is not None:
            return grpc.aio.secure_channel(target, self._credentials, options=options)
        return grpc.aio.insecure_channel(target, options=options)

    async def replica_addresses(self) -> list[str]:
        """Every replica address the targets stand for now (``dns:`` names resolved afresh)."""
        found: list[str] = []
        for target in self.targets:
            try:
                found += await asyncio.to_thread(replica_addresses, target)
            except OSError as error:
                raise Unavailable(f"cannot resolve {target}: {error}") from None
        return list(dict.fromkeys(found))

    def _address_channel(self, address: str) -> grpc.aio.Channel:
        """A channel to one replica, kept for the next ``Stop``; TLS still checks the fleet's own name."""
        if address in self.targets:
            return self.channels[self.targets.index(address)]  # a single server's own channel
        if address not in self._by_address:
            names = [name[0] for name in map(dns_name, self.targets) if name is not None]
            tls_name = [("grpc.ssl_target_name_override", names[0])] if names and self._credentials else []
            self._by_address[address] = self._channel(address, SINGLE_SERVICE_CONFIG, tls_name)
        return self._by_address[address]

    def _next_channel(self) -> grpc.aio.Channel:
        return self.channels[next(self._turn)]

    async def connect(self, timeout: float) -> None:
        """Wait until every target accepts a connection, or raise :class:`Unavailable` naming those that did not."""

        async def ready(target: str, channel: grpc.aio.Channel) -> str | None:
            try:
                await asyncio.wait_for(channel.channel_ready(), timeout)
            except TimeoutError:
                return target
            return None

        failed = [t for t in await asyncio.gather(*map(ready, self.targets, self.channels)) if t]
        if failed:
            raise Unavailable(f"cannot connect to {', '.join(failed)} within {timeout:g}s")

    async def unary(
        self, method: str, request: Message, response: type[M], *, timeout: float | None, address: str | None = None
    ) -> M:
        """Call a unary ``method`` on the next target (or on the replica at ``address``); failures raise EngineError."""
        channel = self._next_channel() if address is None else self._address_channel(address)
        call: Any = channel.unary_unary(
            method, request_serializer=type(request).SerializeToString, response_deserializer=response.FromString
        )
        try:
            reply: M = await call(request, timeout=timeout, metadata=self.metadata or None)
        except grpc.aio.AioRpcError as error:
            raise error_from_status(error.code(), error.details(), error.trailing_metadata(), None) from None
        return reply

    def session(
        self,
        engine: str,
        error_class: type[Message] | None,
        timeout: float | None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> SessionCall:
        """Open a ``Session`` call on the next target (with ``metadata`` besides the token's, e.g. ``traceparent``);
        nothing is sent until :meth:`SessionCall.write`."""
        call: Any = self._next_channel().stream_stream(
            SESSION, request_serializer=None, response_deserializer=pb.GenerateResponse.FromString
        )(timeout=timeout, metadata=(*self.metadata, *metadata) or None)
        return SessionCall(call, engine, error_class)

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in [*self.channels, *self._by_address.values()]))


class SessionCall:
    """One ``Session`` call: raw writes, typed reads, cancel; its failures as :class:`EngineError`."""

    __slots__ = ("_call", "_engine", "_error_class")

    def __init__(self, call: Any, engine: str, error_class: type[Message] | None) -> None:
        self._call = call
        self._engine = engine
        self._error_class = error_class

    async def write(self, data: bytes) -> None:
        """Send one serialized ``SessionRequest``; a call that already ended takes nothing (its status tells why)."""
        try:
            await self._call.write(data)
        except grpc.aio.AioRpcError as error:
            raise self._error(error.code(), error.details(), error.trailing_metadata()) from None
        except asyncio.InvalidStateError:
            pass

    async def try_write(self, data: bytes) -> None:
        """:meth:`write`, for a control message: if the call has ended meanwhile there is nothing left to do."""
        with contextlib.suppress(EngineError):
            await self.write(data)

    async def read(self) -> pb.GenerateResponse | None:
        """The next response, or None once the server has closed the stream (then :meth:`status` says how)."""
        try:
            reply = await self._call.read()
        except grpc.aio.AioRpcError as error:
            raise self._error(error.code(), error.details(), error.trailing_metadata()) from None
        return None if reply is grpc.aio.EOF else reply

    async def initial_metadata(self) -> dict[str, str]:
        """The initial metadata the server sent (empty if the call ended without any)."""
        metadata = await self._call.initial_metadata()
        return {key: value for key, value in metadata or () if isinstance(value, str)}

    async def trailing_metadata(self) -> dict[str, str]:
        """The trailing metadata the server sent (empty if none), once the call has ended."""
        metadata = await self._call.trailing_metadata()
        return {key: value for key, value in metadata or () if isinstance(value, str)}

    async def status(self) -> EngineError | None:
        """After the stream closed: None for OK, else the error its status stands for."""
        code = await self._call.code()
        if code is grpc.StatusCode.OK:
            return None
        return self._error(code, await self._call.details(), await self._call.trailing_metadata())

    def _error(self, code: grpc.StatusCode, details: str | None, trailing: Any) -> EngineError:
        if code is grpc.StatusCode.INTERNAL and details == _CORE_FAILURE:
            # grpc-core's own words when the call's transport fails under it, as when the server is SIGKILLed while
            # this side writes (an in-band stop). The server never says this (its INTERNAL names the engine and
            # the request id): it is a lost connection, and a resumable stream moves on as for UNAVAILABLE.
            code, details = grpc.StatusCode.UNAVAILABLE, f"engine {self._engine!r}: the connection was lost ({details})"
        if code is grpc.StatusCode.UNAVAILABLE and not details:
            details = f"engine {self._engine!r}: the server is unavailable"
        return error_from_status(code, details, trailing, self._error_class)

    def cancel(self) -> None:
        self._call.cancel()

    def done(self) -> bool:
        return bool(self._call.done())

    def cancelled(self) -> bool:
        return bool(self._call.cancelled())


def _credentials(ca: str | None, cert: str | None, key: str | None) -> grpc.ChannelCredentials | None:
    if not (ca or cert or key):
        return None
    if bool(cert) != bool(key):
        raise ValueError("a client certificate needs both tls_cert and tls_key")
    try:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes() if ca else None,
            private_key=Path(key).read_bytes() if key else None,
            certificate_chain=Path(cert).read_bytes() if cert else None,
        )
    except OSError as error:
        raise ValueError(f"cannot read a TLS file: {error}") from None
