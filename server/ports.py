"""Probing and holding the TCP port that the ``--workers`` supervisor's workers will share.

The supervisor checks that the port is free (or picks one for ``--port 0``) before any worker starts, so that a
port held by someone else is an error rather than a neighbour the workers join silently, and holds it bound (not
listening) until the workers listen on it.
"""

from __future__ import annotations

import socket

from .app import StartupError

__all__ = ["bind_reuseport", "free_port"]


def free_port(host: str, port: int) -> int:
    """Check that ``host:port`` is free, or pick a free port for 0; raise :class:`~.app.StartupError` if not.

    The probe binds without SO_REUSEPORT, so a server already listening there, with SO_REUSEPORT or not, is
    refused here rather than joined silently by the workers.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as error:
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Like grpc's own listener: a port with connections in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise StartupError(f"cannot listen on {host}:{port}: {error.strerror} (is the port in use?)") from None
        return int(probe.getsockname()[1])


def bind_reuseport(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT (not listening), which the workers can bind beside."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {error.strerror} (is the port in use?)") from None
    return sock
