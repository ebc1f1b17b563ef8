"""Engine health that means something: an idle engine's declared health request, run now and then.

An engine registered with ``health_request=`` gets a watcher task. Every ``interval`` seconds, if no generation of
that engine is in flight, the watcher runs the request through the engine locally (not through the servicer, so
it is no client request: no metrics, no request log line) and reads the stream to its end within ``timeout``
seconds. A run that raises or overruns (it is then killed) turns the engine's health status NOT_SERVING; the
next run that succeeds turns it SERVING again. Only changes are published.

A busy engine is not checked: its clients are exercising it already, and a health run would compete with them
(for a GPU, say). Its status stays what the last run found.

Example::

    checks = EngineHealthChecks(registry, inflight, health_servicer.set, interval=10, timeout=5)
    checks.start()
    ...
    await checks.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2

from .context import Context
from .engine import LocalEngine
from .errors import EngineError
from .inflight import InFlight
from .registry import EngineRegistry

__all__ = ["EngineHealthChecks", "SetStatus"]

log = logging.getLogger("engine_runtime.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

SetStatus = Callable[[str, int], Awaitable[None]]
"""How a status (a ``HealthCheckResponse.ServingStatus``) is published: the aio ``HealthServicer.set``."""


class EngineHealthChecks:
    """One watcher task per engine that declares a health request; see the module's docstring."""

    def __init__(
        self, registry: EngineRegistry, inflight: InFlight, set_status: SetStatus, *, interval: float, timeout: float
    ) -> None:
        self.registry = registry
        self.inflight = inflight
        self.interval = interval
        self.timeout = timeout
        self._set_status = set_status
        self._tasks: list[asyncio.Task[None]] = []
        self._runs = itertools.count(1)

    def start(self) -> None:
        """Start watching (the first run is at once). The statuses are assumed SERVING until a run fails."""
        if self._tasks:
            return
        for engine in self.registry:
            if engine.health_request is not None:
                self._tasks.append(asyncio.create_task(self._watch(engine), name=f"health {engine.name}"))

    async def stop(self) -> None:
        """Stop watching; a run in progress is killed. Idempotent."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def check(self, engine: LocalEngine) -> str | None:
        """Run ``engine``'s health request once: ``None`` when it is healthy, else why it is not."""
        assert engine.health_request is not None
        ctx = Context(f"health-{engine.name}-{next(self._runs)}")
        try:
            stream = await engine.generate(engine.health_request, ctx)
        except EngineError as error:
            return f"{error.code.name}: {error.message}"
        try:
            async with asyncio.timeout(self.timeout):
                while await stream.next_batch():
                    pass
        except TimeoutError:
            return f"no end within {self.timeout:g}s (--engine-health-timeout); the run was killed"
        except EngineError as error:
            return f"{error.code.name}: {error.message}"
        finally:
            if not ctx.is_done():
                # The kill cancels the engine's task; an engine that ignores even that is left behind, not awaited.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stream.aclose(), self.timeout)
        return None

    async def _watch(self, engine: LocalEngine) -> None:
        healthy = True
        while True:
            if not self.inflight.count(engine.name):
                problem = await self.check(engine)
                if (problem is None) != healthy:
                    healthy = problem is None
                    await self._set_status(engine.name, SERVING if healthy else NOT_SERVING)
                    if healthy:
                        log.info("engine %r is SERVING again", engine.name, extra={"engine": engine.name})
                    else:
                        log.warning(
                            "engine %r is NOT_SERVING: its health request failed: %s",
                            engine.name,
                            problem,
                            extra={"engine": engine.name},
                        )
            await asyncio.sleep(self.interval)
