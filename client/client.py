"""`EngineClient`: the engines of one or more servers, as local-looking engines.

Example::

    async with EngineClient("127.0.0.1:50051") as client:
        echo = (await client.get("echo")).downcast(EchoRequest, EchoResponse)
        async for item in await echo.generate(EchoRequest(text="a b")):
            print(item.text)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.server import tracing
from engine_runtime.server.errors import EngineError, EngineNotFound
from engine_runtime.server.protocol import LIST_ENGINES, STOP, error_for

from .migration import DEFAULT_MIGRATION_LIMIT, Migrations
from .remote import RemoteEngine
from .routing import split_targets
from .transport import Transport

__all__ = ["STOP_TIMEOUT", "EngineClient"]

STOP_TIMEOUT = 10.0
"""Seconds each replica has to answer a :meth:`EngineClient.stop` when the client sets no ``timeout``."""


class EngineClient:
    """A client of one server, or of a fleet of replicas with calls steered to the least-loaded.

    ``target`` is ``host:port``, ``unix:PATH``, ``dns:///host:port`` (every address the name resolves to),
    ``ipv4:HOST:PORT,HOST:PORT``, or a list (or comma-separated string) of those. A fleet target (a ``dns:`` name,
    an ``ipv4:``/``ipv6:`` list, several IP addresses) gets weighted round-robin over the replicas' load reports
    and retries of calls refused before they started (docs/scaling.md); other lists are taken in turn. ``options``
    are grpc channel arguments, and win over the client's own. ``tls_ca`` turns on TLS (``tls_cert`` and
    ``tls_key`` add a client certificate, for mutual TLS); ``token`` (or ``token_file``) is sent as
    ``authorization: Bearer <token>``. ``connect_timeout`` bounds the wait for every target on entry;
    ``timeout`` is the deadline of each call (None: none). ``priority`` is the ``GenerateRequest.priority`` of
    every generation (where it stands in a busy engine's queue: higher first, then oldest); one engine's calls
    can take another with :meth:`RemoteEngine.with_priority`. A stream of a resumable engine that breaks (its
    replica died or was drained, its connection was lost) continues on another replica from the items received,
    up to ``migration_limit`` times (0: never); :attr:`migrations` counts how many times that happened.
    """

    def __init__(
        self,
        target: str | Sequence[str] = "127.0.0.1:50051",
        *,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        token: str | None = None,
        token_file: str | None = None,
        connect_timeout: float = 10.0,
        timeout: float | None = None,
        priority: int = 0,
        options: Sequence[tuple[str, Any]] = (),
        migration_limit: int = DEFAULT_MIGRATION_LIMIT,
    ) -> None:
        targets = split_targets(target)
        if token_file is not None:
            token = Path(token_file).read_text().strip()
        self.transport = Transport(
            targets, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, token=token, options=options
        )
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        tracing.configure_from_environment()
        self.priority = priority
        self._migrations = Migrations(migration_limit)

    @property
    def migration_limit(self) -> int:
        """How many times one stream of a resumable engine may continue on another replica."""
        return self._migrations.limit

    @property
    def migrations(self) -> int:
        """How many times this client's streams continued on another replica (each is also logged)."""
        return self._migrations.count

    async def __aenter__(self) -> EngineClient:
        try:
            await self.transport.connect(self.connect_timeout)
        except BaseException:
            await self.transport.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels; generations still streaming are cancelled (killed on the server)."""
        await self.transport.close()

    async def describe(self, name: str = "") -> list[pb.EngineInfo]:
        """The servers' description of every engine (or of the one named): types, descriptors, unary.

        Raises :class:`~engine_runtime.server.errors.EngineNotFound` naming the engines served.
        """
        request = pb.ListEnginesRequest(name=name)
        reply = await self.transport.unary(LIST_ENGINES, request, pb.ListEnginesResponse, timeout=self.timeout)
        return list(reply.engines)

    async def list_engines(self) -> list[str]:
        """The names of the engines served."""
        return [info.name for info in await self.describe()]

    async def get(self, name: str) -> RemoteEngine:
        """The engine ``name`` as an :class:`~server.AnyEngine`; raises ``EngineNotFound`` naming those served."""
        (info,) = await self.describe(name)
        return RemoteEngine(info, self.transport, self.timeout, self.priority, self._migrations)

    async def stop(self, request_id: str, *, key: str, kill: bool = False) -> None:
        """Stop (or kill) a generation by request id on whichever replica runs it; NOT_FOUND if none does.

        Every replica address of the targets is asked at once (``dns:`` names are resolved now), each call bounded
        by ``timeout`` or :data:`STOP_TIMEOUT`: a replica that runs the id is found whichever of a fleet it is.

        ``key`` is the generation's ``x-stop-key`` (``await stream.stop_key()``): a wrong or missing key is
        answered NOT_FOUND, like an id that is not in flight. A stream's own ``context.stop_generating()`` is
        better where it is at hand: it travels on the generation's call and needs no key.
        """
        request = pb.StopRequest(request_id=request_id, kill=kill, stop_key=key)
        addresses = await self.transport.replica_addresses()
        timeout = self.timeout if self.timeout is not None else STOP_TIMEOUT

        async def stop_at(address: str) -> EngineError | None:
            try:
                await self.transport.unary(STOP, request, pb.StopResponse, timeout=timeout, address=address)
            except EngineError as error:
                return error
            return None

        # Every replica at once: only the owner knows the id (and its key); the others answer NOT_FOUND.
        outcomes = await asyncio.gather(*map(stop_at, addresses))
        errors = [(a, e) for a, e in zip(addresses, outcomes, strict=True) if e is not None]
        if len(errors) < len(outcomes):
            return  # one replica had it
        for address, error in errors:
            if not isinstance(error, EngineNotFound):
                raise error_for(error.code, f"{error.message} (at {address}; no other replica runs {request_id!r})")
        raise errors[0][1]
