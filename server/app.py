"""`EngineServer`: a grpc.aio server with the engine service, health, reflection, limits and the drain.

Example::

    async with EngineServer(registry, ServerConfig(port=0)) as server:
        print(server.addresses)          # ['127.0.0.1:43125']
        await server.wait_closed()       # until a drain (SIGTERM) ends it
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import tracing
from .advertise import advertised_address
from .budget import DEFAULT_MAX_OUTPUT_BYTES
from .health import EngineHealthChecks
from .health_service import HealthService
from .inflight import InFlight
from .load import Load
from .metrics import MetricsEndpoint, MetricsStartError, ServerMetrics
from .options import channel_options
from .orca_service import OrcaService
from .protocol import SERVICE_NAME
from .pump import DEFAULT_KILL_TIMEOUT
from .registry import EngineRegistry
from .service import EngineService
from .threads import DEFAULT_ENGINE_THREADS, configure_engine_threads
from .watchdog import LoopWatchdog

__all__ = ["EngineServer", "ServerConfig", "StartupError"]

log = logging.getLogger("engine_runtime.server")


class StartupError(RuntimeError):
    """The server could not start (a port in use, an unreadable certificate, ...); the message says why."""


@dataclass
class ServerConfig:
    """Everything ``engine-server`` can set; see docs/operations.md for each option."""

    host: str = "127.0.0.1"
    advertise_address: str | None = None  # x-served-by; None: the listening address (see advertised_address)
    port: int = 50051
    uds: str | None = None
    no_tcp: bool = False
    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrency: int = 0
    max_engine_concurrency: int = 0
    max_queue: int = 0  # per engine with a concurrency limit; 0: refuse at the limit
    queue_timeout: float = 0.0  # 0: a queued call waits as long as its deadline allows
    drain_timeout: float = 30.0
    stop_timeout: float = 10.0
    kill_timeout: float = DEFAULT_KILL_TIMEOUT
    keepalive_time: float = 30.0
    ping_timeout: float = 10.0
    max_streams_per_connection: int = 1024
    max_connections: int = 0  # 0: what the process's file limit leaves (see default_max_connections)
    max_connection_idle: float = 300.0
    max_connection_age: float = 0.0  # 0: connections live on (no GOAWAY for age)
    max_connection_age_grace: float = 0.0  # 0: calls on an aged connection may run to their end
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    engine_threads: int = DEFAULT_ENGINE_THREADS
    loop_stall_warning: float = 0.1  # 0: no watchdog
    worker_heartbeat_timeout: float = 10.0  # --workers only
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    auth_token: str | None = field(default=None, repr=False)
    reuse_port: bool = False
    extra_options: Sequence[tuple[str, Any]] = ()
    metrics_port: int | None = None
    engine_health_interval: float = 10.0
    engine_health_timeout: float = 5.0
    announce: bool = True


class EngineServer:
    """Serves a registry: ``engine.v1.EngineService``, ``grpc.health.v1`` and server reflection."""

    def __init__(self, registry: EngineRegistry, config: ServerConfig | None = None) -> None:
        self.registry = registry
        self.config = config = config if config is not None else ServerConfig()
        self.inflight = InFlight(
            config.max_concurrency,
            config.max_engine_concurrency,
            max_queue=config.max_queue,
            queue_timeout=config.queue_timeout,
            engine_limits={e.name: e.max_concurrency for e in registry if e.max_concurrency is not None},
        )
        self.service = EngineService(
            registry,
            inflight=self.inflight,
            max_message_bytes=config.max_message_bytes,
            kill_timeout=config.kill_timeout,
            max_output_bytes=config.max_output_bytes,
        )
        self.health = HealthService()
        self.load = Load(self.inflight, config.max_concurrency, queued=self.inflight.queued)
        self.service.on_started(self.load.started)
        self.orca = OrcaService(self.load)
        self.metrics = ServerMetrics() if config.metrics_port is not None else None
        if self.metrics is not None:
            self.metrics.attach(self.service)
        if tracing.SWITCH.on:  # decided at start (engine-server's environment, or tracing.enable())
            tracing.ServerTracing().attach(self.service)
        self.metrics_url: str | None = None
        self._metrics_endpoint: MetricsEndpoint | None = None
        self.engine_health = EngineHealthChecks(
            registry,
            self.inflight,
            self.health.set,
            interval=config.engine_health_interval,
            timeout=config.engine_health_timeout,
        )
        self.addresses: list[str] = []
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._closed = asyncio.Event()
        self._drain_task: asyncio.Task[None] | None = None
        self._watchdog: LoopWatchdog | None = None
        self._stopping: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Bind the listeners and start serving. Raises :class:`StartupError` with a one-line reason."""
        c = self.config
        if c.no_tcp and not c.uds:
            raise StartupError("--no-tcp needs --uds PATH: there would be nothing to listen on")
        server = grpc.aio.server(options=channel_options(self.config), interceptors=self._interceptors())
        server.add_generic_rpc_handlers([self.service.handler(), self.orca.handler()])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            server,
        )
        credentials = self._credentials()
        if not c.no_tcp:
            address = f"[{c.host}]:{c.port}" if ":" in c.host else f"{c.host}:{c.port}"
            try:
                port = (
                    server.add_secure_port(address, credentials)
                    if credentials is not None
                    else server.add_insecure_port(address)
                )
            except RuntimeError as error:
                raise StartupError(f"cannot listen on {address}: {error} (is the port in use?)") from None
            if port == 0:
                raise StartupError(f"cannot listen on {address} (is the port in use?)")
            self.port = port
            host = f"[{c.host}]" if ":" in c.host else c.host
            self.addresses.append(f"{host}:{port}")
        if c.uds:
            self.addresses.append(self._bind_uds(server, c.uds, credentials))
        self.service.served_by = advertised_address(c, self.port, self.addresses)
        if self.metrics is not None and c.metrics_port is not None:
            try:
                self._metrics_endpoint = self.metrics.serve(c.host, c.metrics_port)
            except MetricsStartError as error:
                raise StartupError(str(error)) from None
            self.metrics_url = self._metrics_endpoint.url
        await server.start()
        self._server = server
        for readiness in ("", SERVICE_NAME):
            await self.health.set(readiness, health_pb2.HealthCheckResponse.SERVING)
        for name in self.registry.names():
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.engine_health.start()
        self._start_watchdog()
        if not c.announce:
            return  # a --workers supervisor announces the address once, for all its workers
        log.info(
            "engine-server listening on %s (engines: %s)", ", ".join(self.addresses), ", ".join(self.registry.names())
        )

    def _start_watchdog(self) -> None:
        configure_engine_threads(self.config.engine_threads)
        if self.config.loop_stall_warning > 0:
            report = self.metrics.stalled if self.metrics is not None else None
            self._watchdog = LoopWatchdog(asyncio.get_running_loop(), self.config.loop_stall_warning, report)
            self._watchdog.start()

    def _bind_uds(self, server: grpc.aio.Server, path: str, credentials: grpc.ServerCredentials | None) -> str:
        socket_path = Path(path)
        if socket_path.exists():
            if not stat.S_ISSOCK(socket_path.stat().st_mode):
                raise StartupError(f"--uds {path}: a file that is not a socket is in the way")
            socket_path.unlink()  # a stale socket from an earlier run
        # The socket is created under a restrictive umask so that only its owner can connect.
        old = os.umask(0o177)
        try:
            address = f"unix:{socket_path}"
            bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        except RuntimeError as error:
            raise StartupError(f"cannot listen on {address}: {error}") from None
        finally:
            os.umask(old)
        if bound == 0:
            raise StartupError(f"cannot listen on unix:{socket_path}")
        return f"unix:{socket_path}"

    def _credentials(self) -> grpc.ServerCredentials | None:
        c = self.config
        if not (c.tls_cert or c.tls_key):
            if c.tls_client_ca:
                raise StartupError("--tls-client-ca needs --tls-cert and --tls-key")
            return None
        if not (c.tls_cert and c.tls_key):
            raise StartupError("TLS needs both --tls-cert and --tls-key")
        try:
            key = Path(c.tls_key).read_bytes()
            cert = Path(c.tls_cert).read_bytes()
            client_ca = Path(c.tls_client_ca).read_bytes() if c.tls_client_ca else None
        except OSError as error:
            raise StartupError(f"cannot read a TLS file: {error}") from None
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
        )

    def _interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        if self.config.auth_token is None:
            return []
        from .auth import TokenAuth

        return [TokenAuth(self.config.auth_token)]

    async def drain(self) -> None:
        """Shut down gracefully: NOT_SERVING, refuse new calls, let streams finish, stop, then kill (idempotent)."""
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self._drain())
        await asyncio.shield(self._drain_task)

    async def _drain(self) -> None:
        server = self._server
        if server is None:
            self._closed.set()
            return
        c = self.config
        # Refuse new generations before health says NOT_SERVING: whoever sees NOT_SERVING is refused too. The
        # listeners stay open until the end, so health keeps answering on new connections while it drains.
        self.service.draining = True
        await self.engine_health.stop()
        log.info("draining: %d in flight", len(self.inflight))
        await self.health.enter_graceful_shutdown()
        await self.inflight.drain(c.drain_timeout, c.stop_timeout, c.kill_timeout)
        # What remains are long-lived non-generation calls (health Watch): nothing to wait for.
        await self._stop_grpc()
        if c.uds:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(c.uds)
        log.info("drained; bye")
        self._closing()
        self._closed.set()

    async def kill(self) -> None:
        """Stop at once: every generation is killed and every call cancelled."""
        self.service.draining = True
        await self.engine_health.stop()
        self.inflight.kill_all()
        await self._stop_grpc()
        self._closing()
        self._closed.set()

    async def _stop_grpc(self) -> None:
        """Stop grpc's server once, whoever asks (the drain, a kill, or both): two concurrent ``stop`` calls on
        one grpc.aio server can crash the process (SIGSEGV in grpc's shutdown)."""
        if self._server is None:
            return
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._server.stop(0))
        await asyncio.shield(self._stopping)

    def _closing(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()

    async def wait_closed(self) -> None:
        """Wait until the server has been drained or killed."""
        await self._closed.wait()

    async def __aenter__(self) -> EngineServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._closed.is_set():
            await self.kill()
        # The metrics endpoint outlives a drain, so that its final counts can still be scraped.
        endpoint, self._metrics_endpoint = self._metrics_endpoint, None
        if endpoint is not None:
            await asyncio.to_thread(endpoint.close)
