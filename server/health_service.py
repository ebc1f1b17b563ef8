"""The ``grpc.health.v1`` service with the conventions orchestrators and tools rely on.

grpcio's own aio servicer answers ``Check`` and ``Watch``; this one adds:

- ``List``, which grpcio-health-checking advertises in its proto but answers UNIMPLEMENTED: every known
  service's status, liveness included;
- ``liveness``, SERVING for as long as the process answers, draining or busy included, so that an orchestrator's
  liveness probe never restarts a server that is only draining (the readiness names, ``""`` and
  ``engine.v1.EngineService``, turn NOT_SERVING when the drain starts, and each engine's name is its own canary).

Example::

    health = HealthService()
    await health.set("engine.v1.EngineService", health_pb2.HealthCheckResponse.SERVING)
"""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health, health_pb2

__all__ = ["LIVENESS", "HealthService"]

LIVENESS = "liveness"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_messages: Any = health_pb2  # its type stubs predate List's messages


class HealthService(health.aio.HealthServicer):
    """grpcio's aio health servicer, plus ``List`` and a ``liveness`` that a drain never turns off."""

    def __init__(self) -> None:
        super().__init__()
        self._known: dict[str, Any] = {"": SERVING, LIVENESS: SERVING}
        self._draining = False

    async def set(self, service: str, status: Any) -> None:
        if service == LIVENESS:
            return  # the process answers: that is all liveness says
        if not self._draining:
            self._known[service] = status
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        self._draining = True
        for service in self._known:
            if service != LIVENESS:
                self._known[service] = NOT_SERVING
        await super().enter_graceful_shutdown()

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        if request.service == LIVENESS:
            return health_pb2.HealthCheckResponse(status=SERVING)
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        if request.service == LIVENESS:
            await context.write(health_pb2.HealthCheckResponse(status=SERVING))
            await asyncio.Event().wait()  # it never changes: hold the stream until the client leaves
            return
        await super().Watch(request, context)

    async def List(self, request: Any, context: Any) -> Any:
        return _messages.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in self._known.items()}
        )
