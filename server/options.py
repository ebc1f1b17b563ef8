"""The grpc server's channel arguments: keepalive, message size, and the transport limits, with their defaults.

Plain data from a :class:`~.app.ServerConfig`: every limit here is grpc's own (HTTP/2 settings and connection
management), set where grpc has a knob; what grpc has no knob for is in docs/operations.md.
"""

from __future__ import annotations

import resource
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import ServerConfig

__all__ = ["MAX_METADATA_BYTES", "channel_options", "default_max_connections"]

MAX_METADATA_BYTES = 16 * 1024
# File descriptors kept for the server's own needs (listeners, the metrics endpoint, logs, engines' files).
_RESERVED_FILES = 64


def default_max_connections() -> int:
    """The connections a server accepts by default: what the soft file limit leaves after a reserve."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65_536
    return max(16, soft - _RESERVED_FILES)


def _connection_age(c: ServerConfig) -> list[tuple[str, int]]:
    """gRFC A9: a GOAWAY after ``max_connection_age`` (with grpc's own +-10% jitter), so that clients reconnect
    and re-resolve, and replicas added by a scale-out get their share. The grace bounds the calls still running
    on the old connection; without one (0) they run to their end, never cut by the age."""
    if not c.max_connection_age:
        return []
    options = [("grpc.max_connection_age_ms", int(c.max_connection_age * 1000))]
    if c.max_connection_age_grace:
        options.append(("grpc.max_connection_age_grace_ms", int(c.max_connection_age_grace * 1000)))
    return options


def channel_options(c: ServerConfig) -> list[tuple[str, Any]]:
    """The grpc server's channel arguments for ``c``."""
    ping_ms = int(c.ping_timeout * 1000)
    return [
        # grpcio enables SO_REUSEPORT by default: two servers on one port would both bind silently.
        ("grpc.so_reuseport", 1 if c.reuse_port else 0),
        ("grpc.max_send_message_length", c.max_message_bytes),
        ("grpc.max_receive_message_length", c.max_message_bytes),
        ("grpc.keepalive_time_ms", int(c.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", ping_ms),
        # Without this a client that stops reading (SIGSTOP) is noticed only after about a minute.
        ("grpc.http2.ping_timeout_ms", ping_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_pings_without_data", 0),
        # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS: one connection cannot open thousands of streams.
        ("grpc.max_concurrent_streams", c.max_streams_per_connection),
        # Connections past this are refused at accept, before they can use up the file limit.
        ("grpc.max_allowed_incoming_connections", c.max_connections or default_max_connections()),
        # A connection with no call for this long gets a GOAWAY: idle sockets do not pile up.
        ("grpc.max_connection_idle_ms", int(c.max_connection_idle * 1000)),
        *_connection_age(c),
        # Bounds what one request's headers may hold (a HEADERS + CONTINUATION flood; docs/operations.md).
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        *c.extra_options,
    ]
