"""The address a replica gives clients to reach it again: the ``x-served-by`` of its streams (docs/scaling.md).

Example::

    advertised_address(ServerConfig(host="0.0.0.0"), 50051, ["0.0.0.0:50051"])    # '10.1.2.3:50051' (the pod IP)
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import ServerConfig

__all__ = ["advertised_address"]


def advertised_address(config: ServerConfig, port: int | None, addresses: Sequence[str]) -> str:
    """The address clients dial to reach this replica (``x-served-by``): ``--advertise-address``, else the TCP
    address it listens on, with a wildcard host (``0.0.0.0``, ``::``) replaced by the address of the machine's
    hostname (a Kubernetes pod's IP), else its unix socket."""
    if config.advertise_address:
        return config.advertise_address
    if port is None:
        return addresses[0] if addresses else ""
    host = config.host
    if host in ("0.0.0.0", "::", ""):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
