"""``python -m engine_runtime.server.healthcheck``: ask a server's ``grpc.health.v1`` service whether it is serving.

A probe for places that run a command rather than speak gRPC: a Dockerfile ``HEALTHCHECK``, a Kubernetes ``exec``
probe (for a server on a unix socket, where the kubelet's own ``grpc`` probe cannot reach), a deploy script. It
prints the status and exits 0 when it is ``SERVING``, 1 otherwise; a failure to connect is one line on stderr,
never a traceback. Any other outcome, a bad option included, exits 1 too: Docker reserves exit code 2 of a
health check. Health is open even when the server requires a token, so the probe sends none.

Example::

    $ python -m engine_runtime.server.healthcheck --target 127.0.0.1:50051
    SERVING
    $ python -m engine_runtime.server.healthcheck --target unix:/sockets/engine.sock --service echo
    SERVING
    $ python -m engine_runtime.server.healthcheck --target 127.0.0.1:50999
    Error: cannot reach 127.0.0.1:50999: failed to connect to all addresses; ...
"""

from __future__ import annotations

from pathlib import Path

import click
import grpc
from grpc_health.v1 import health_pb2

__all__ = ["check", "command", "main"]

SERVING = health_pb2.HealthCheckResponse.SERVING
CHECK_METHOD = "/grpc.health.v1.Health/Check"


class ProbeError(Exception):
    """The server did not give a status: the message is the one line to print."""


def check(target: str, service: str = "", timeout: float = 3.0, tls_ca: bytes | None = None) -> str:
    """Return the health status name (``"SERVING"``, ``"NOT_SERVING"``, ...) of ``service`` on ``target``.

    Raises :class:`ProbeError` when there is no status to report: the server is unreachable, does not answer
    within ``timeout`` seconds, or does not know ``service``.
    """
    channel = (
        grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=tls_ca))
        if tls_ca is not None
        else grpc.insecure_channel(target)
    )
    with channel:
        # Built by hand rather than with HealthStub, whose type stubs do not declare its methods.
        health_check = channel.unary_unary(
            CHECK_METHOD,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            response = health_check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as error:
            raise ProbeError(_describe(error, target, service, timeout)) from None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def _describe(error: grpc.RpcError, target: str, service: str, timeout: float) -> str:
    # A grpc.RpcError raised by a call is also a grpc.Call; the base class has neither method.
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach {target}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no answer from {target} within {timeout:g}s"
    if code == grpc.StatusCode.NOT_FOUND:
        return f"{target} does not know the service {service!r}"
    return f"{target}: {code.name}: {details}"


@click.command(context_settings={"show_default": True})
@click.option("--target", default="127.0.0.1:50051", help="Server address: HOST:PORT, unix:PATH or dns:///HOST:PORT.")
@click.option("--service", default="", help='Service to check: "" for the whole server, or an engine\'s name.')
@click.option("--timeout", default=3.0, type=click.FloatRange(min=0, min_open=True), help="Seconds to wait.")
@click.option("--tls-ca", type=click.Path(dir_okay=False), help="PEM CA bundle: connect with TLS.")
def command(target: str, service: str, timeout: float, tls_ca: str | None) -> None:
    """Exit 0 when the server's health service reports SERVING, 1 otherwise."""
    try:
        tls_ca_bytes = Path(tls_ca).read_bytes() if tls_ca is not None else None
    except OSError as error:
        raise click.ClickException(f"cannot read --tls-ca {tls_ca}: {error.strerror}") from None
    try:
        status = check(target, service, timeout, tls_ca_bytes)
    except ProbeError as error:
        raise click.ClickException(str(error)) from None
    click.echo(status)
    if health_pb2.HealthCheckResponse.ServingStatus.Value(status) != SERVING:
        raise SystemExit(1)


def main() -> None:
    try:
        # Not standalone: click would exit 2 on a usage error, which Docker reserves.
        code = command.main(prog_name="python -m engine_runtime.server.healthcheck", standalone_mode=False)
    except click.ClickException as error:
        error.show()
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
