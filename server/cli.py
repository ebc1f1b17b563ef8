"""``engine-server``: the command line, turned into a :class:`~.app.ServerConfig` and handed to the runner.

Every option is also an environment variable ``ENGINE_SERVER_<NAME>`` and a key of the TOML file given with
``--config``; the command line wins over the environment, which wins over the file.
"""

from __future__ import annotations

import sys
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click

from .app import ServerConfig, StartupError
from .budget import DEFAULT_MAX_OUTPUT_BYTES
from .logs import configure_logging
from .runner import event_loop, run_server
from .supervisor import Supervisor
from .targets import TargetError, load_targets
from .threads import DEFAULT_ENGINE_THREADS
from .worker import WorkerSpec

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _load_config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Read the TOML file into click's default map, under the options' own names."""
    if value is None:
        return None
    try:
        data = tomllib.loads(Path(value).read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise click.BadParameter(f"cannot read {value}: {error}") from None
    section = data.get("engine-server", data.get("engine_server", data))
    options = {p.name for p in ctx.command.params if p.name}
    defaults: dict[str, Any] = {}
    for key, item in section.items():
        name = key.replace("-", "_")
        if name not in options or name == "config":
            raise click.BadParameter(f"{value}: unknown key {key!r}")
        defaults[name] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _seconds(name: str, default: float, minimum: float, help: str) -> Callable[[F], F]:
    return click.option(name, default=default, type=click.FloatRange(minimum), help=help)


def _count(name: str, default: int, minimum: int, help: str) -> Callable[[F], F]:
    return click.option(name, default=default, type=click.IntRange(minimum), help=help)


@click.command(context_settings={"auto_envvar_prefix": "ENGINE_SERVER", "show_default": True})
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    callback=_load_config,
    is_eager=True,
    expose_value=False,
    help="TOML file with option values (keys as the long options).",
)
@click.option("--host", default="127.0.0.1", help="Address to bind; 0.0.0.0 or :: to listen beyond this machine.")
@click.option(
    "--advertise-address",
    help="HOST:PORT clients dial to reach this replica, sent as x-served-by (for Stop); default: the one listened on.",
)
@click.option("--port", default=50051, type=click.IntRange(0, 65535), help="TCP port; 0 picks a free one.")
@click.option("--uds", type=click.Path(dir_okay=False), help="Also listen on this unix socket (owner-only).")
@click.option("--no-tcp", is_flag=True, help="Listen on the unix socket only.")
@click.option(
    "--workers",
    default=1,
    type=click.IntRange(1, 256),
    help="Processes serving the same port (SO_REUSEPORT: the kernel balances connections, not calls).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (on --host; 0 picks a free port). Off by default.",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="PEM certificate chain: serve TLS.")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="PEM private key of --tls-cert.")
@click.option("--tls-client-ca", type=click.Path(dir_okay=False), help="PEM CA bundle: require client certs (mTLS).")
@click.option(
    "--auth-token-file",
    type=click.Path(dir_okay=False),
    help="File holding a token every call but health and ORCA load reports must carry as "
    "`authorization: Bearer <token>`.",
)
@_count("--max-concurrency", 0, 0, "Generations in flight; 0: no limit.")
@_count("--max-engine-concurrency", 0, 0, "Generations in flight per engine; 0: no limit (max_concurrency= wins).")
@_count("--max-queue", 0, 0, "Calls that wait per engine at its concurrency limit; 0: refuse them at once.")
@_seconds("--queue-timeout", 0.0, 0, "Seconds a call may wait in an engine's queue; 0: as long as its deadline allows.")
@_count("--max-message-bytes", 4 * 1024 * 1024, 1024, "Largest message sent or received.")
@_count("--max-output-bytes", DEFAULT_MAX_OUTPUT_BYTES, 1, "Bytes of large items held for slow readers at once.")
@_seconds("--drain-timeout", 30.0, 0, "Seconds streams may run on after SIGTERM.")
@_seconds("--stop-timeout", 10.0, 0, "Seconds after the graceful stop before streams are killed.")
@_seconds(
    "--kill-timeout",
    2.0,
    0.01,
    "Seconds a killed engine has to end; then its call ends anyway (its task: a zombie).",
)
@_count("--engine-threads", DEFAULT_ENGINE_THREADS, 1, "Worker threads that sync engines (a plain def) run in.")
@_seconds(
    "--loop-stall-warning", 0.1, 0, "Log an event-loop stall longer than this, naming the engine; 0: no watchdog."
)
@_seconds(
    "--worker-heartbeat-timeout",
    10.0,
    0.3,
    "With --workers: seconds of unanswered heartbeats before a worker is replaced.",
)
@_count("--max-streams-per-connection", 1024, 1, "Streams one connection may have open (MAX_CONCURRENT_STREAMS).")
@_count("--max-connections", 0, 0, "Connections accepted at once; 0: the soft file limit less 64 kept for the server.")
@_seconds("--max-connection-idle", 300.0, 0.1, "Seconds without a call before a connection is closed (GOAWAY).")
@_seconds(
    "--max-connection-age",
    0.0,
    0,
    "Seconds before a connection is sent a GOAWAY, so clients reconnect and re-resolve (gRFC A9); 0: never.",
)
@_seconds(
    "--max-connection-age-grace",
    0.0,
    0,
    "Seconds calls may run on a connection past its age before it is closed; 0: until they end.",
)
@_seconds("--keepalive-time", 30.0, 0.1, "Seconds between keepalive pings.")
@_seconds("--ping-timeout", 10.0, 0.1, "Seconds without a ping answer before a client counts as gone (and is killed).")
@_seconds("--engine-health-interval", 10.0, 0.1, "Seconds between runs of an idle engine's declared health request.")
@_seconds("--engine-health-timeout", 5.0, 0.01, "Seconds a health run may take before the engine is NOT_SERVING.")
@click.option("--log-format", default="text", type=click.Choice(["text", "json"]))
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--loop",
    "loop_name",
    default="auto",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    help="Event loop; auto uses uvloop where it is installed.",
)
def command(targets: tuple[str, ...], **options: Any) -> None:
    """Serve engines over gRPC.

    TARGET is `module:attribute` (an EngineRegistry or an engine) or `module` (its `registry`). With no TARGET
    the built-in example engines are served.
    """
    configure_logging(options["log_format"], options["log_level"])
    try:
        if options["workers"] > 1:
            code = serve_workers(
                targets,
                _server_config(options),
                options["workers"],
                log_format=options["log_format"],
                log_level=options["log_level"],
                loop_name=options["loop_name"],
            )
        else:
            registry = load_targets(targets)
            code = run_server(registry, _server_config(options), loop_name=options["loop_name"])
    except (TargetError, StartupError) as error:
        raise click.ClickException(str(error)) from None
    sys.exit(code)


def _server_config(options: dict[str, Any]) -> ServerConfig:
    token = None
    if options["auth_token_file"]:
        try:
            token = Path(options["auth_token_file"]).read_text().strip()
        except OSError as error:
            raise StartupError(f"cannot read --auth-token-file: {error.strerror}") from None
        if not token:
            raise StartupError("--auth-token-file is empty")
    return ServerConfig(
        host=options["host"],
        advertise_address=options["advertise_address"],
        port=options["port"],
        uds=options["uds"],
        no_tcp=options["no_tcp"],
        max_message_bytes=options["max_message_bytes"],
        max_concurrency=options["max_concurrency"],
        max_engine_concurrency=options["max_engine_concurrency"],
        max_queue=options["max_queue"],
        queue_timeout=options["queue_timeout"],
        drain_timeout=options["drain_timeout"],
        stop_timeout=options["stop_timeout"],
        kill_timeout=options["kill_timeout"],
        engine_threads=options["engine_threads"],
        loop_stall_warning=options["loop_stall_warning"],
        max_streams_per_connection=options["max_streams_per_connection"],
        max_connections=options["max_connections"],
        max_connection_idle=options["max_connection_idle"],
        max_connection_age=options["max_connection_age"],
        max_connection_age_grace=options["max_connection_age_grace"],
        max_output_bytes=options["max_output_bytes"],
        worker_heartbeat_timeout=options["worker_heartbeat_timeout"],
        keepalive_time=options["keepalive_time"],
        ping_timeout=options["ping_timeout"],
        tls_cert=options["tls_cert"],
        tls_key=options["tls_key"],
        tls_client_ca=options["tls_client_ca"],
        auth_token=token,
        metrics_port=options["metrics_port"],
        engine_health_interval=options["engine_health_interval"],
        engine_health_timeout=options["engine_health_timeout"],
    )


def main() -> None:
    command()


def serve_workers(
    targets: Iterable[str], config: ServerConfig, count: int, *, log_format: str, log_level: str, loop_name: str
) -> int:
    """Serve ``config``'s port from ``count`` worker processes until a signal drains them; return the exit code.

    Raises :class:`~.app.StartupError` (one line) when the server cannot start: the port or the metrics
    port is taken, a unix socket was asked for, uvloop was asked for and is missing, or a worker failed before it
    served.
    """
    if config.uds or config.no_tcp:
        raise StartupError("--workers serves TCP only: several processes cannot share one unix socket (--uds)")
    event_loop(loop_name)  # the workers' loop: a missing uvloop is an error here, once
    spec = WorkerSpec(
        targets=tuple(targets),
        config=config,
        log_format=log_format,
        log_level=log_level,
        loop_name=loop_name,
        metrics=config.metrics_port is not None,
    )
    return Supervisor(spec, count).run()
