"""How a client's targets become channels, and the service config that spreads calls over a fleet.

Plain data, no gRPC. A *fleet* target is one that names or may resolve to several replicas: an ``ipv4:`` or
``ipv6:`` list, or a ``dns:`` name (a Kubernetes headless Service). Its channel uses :data:`FLEET_SERVICE_CONFIG`:

- ``weighted_round_robin`` over the replicas' out-of-band ORCA load reports (gRFC A51, A58): a replica holding
  many long streams reports a high utilization and gets fewer new calls;
- client-side health checking (gRFC A17) of ``engine.v1.EngineService``: a draining replica says NOT_SERVING and
  leaves the pick set before its listeners close;
- a retry policy (gRFC A6) for UNAVAILABLE and RESOURCE_EXHAUSTED only. The server refuses with those before any
  generation started (a limit, a drain), with ``grpc-retry-pushback-ms``; once a generation starts the server
  sends its initial metadata, which commits the call, so a started generation is never retried. Retry
  throttling stops retries when most calls of the channel fail (the fleet is full or down).

A single ``host:port`` or ``unix:`` target keeps plain round-robin and no retries: one server has nowhere else
to send a refused call. A list of IP-literal ``host:port`` targets becomes one ``ipv4:`` (or ``ipv6:``) target;
other lists (host names, unix sockets) keep a channel per target, taken in turn.

Example::

    channel_targets(["127.0.0.2:50051", "127.0.0.3:50051"])    # ['ipv4:127.0.0.2:50051,127.0.0.3:50051']
    is_fleet("dns:///engines.default.svc.cluster.local:50051")   # True
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Sequence

from engine_runtime.server.protocol import SERVICE_NAME

from .dns import resolve_at

__all__ = [
    "FLEET_SERVICE_CONFIG",
    "SINGLE_SERVICE_CONFIG",
    "channel_targets",
    "dns_authority",
    "dns_name",
    "is_fleet",
    "replica_addresses",
    "split_targets",
]

FLEET_POLICY = {
    "weighted_round_robin": {
        "enableOobLoadReport": True,
        # How often each replica streams its report, and how often weights are recomputed: measured on skewed
        # streams, a 1 s report let new calls herd onto a replica before its load showed (docs/scaling.md).
        "oobReportingPeriod": "0.1s",
        "weightUpdatePeriod": "0.1s",
        # A replica's weight counts only after reporting this long (a new replica starts at the mean weight).
        "blackoutPeriod": "1s",
        "weightExpirationPeriod": "60s",
    }
}
RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
}
FLEET_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [FLEET_POLICY],
        "healthCheckConfig": {"serviceName": SERVICE_NAME},
        "methodConfig": [{"name": [{"service": SERVICE_NAME}], "retryPolicy": RETRY_POLICY}],
        "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
    }
)
"""The service config of a fleet target's channel (docs/scaling.md shows it for other languages)."""
SINGLE_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
"""The service config of a single server's channel."""


def split_targets(target: str | Sequence[str]) -> list[str]:
    """The targets a client was given: a list, or a comma-separated string (an ``ipv4:``/``ipv6:`` list is one)."""
    if isinstance(target, str):
        if target.strip().startswith(("ipv4:", "ipv6:")):
            return [target.strip()]
        return [t.strip() for t in target.split(",") if t.strip()]
    return [t.strip() for t in target if t.strip()]


def _ip_literal(target: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def channel_targets(targets: Sequence[str]) -> list[str]:
    """One channel target per group: IP-literal ``host:port`` items of one family joined as ``ipv4:``/``ipv6:``."""
    if len(targets) < 2:
        return list(targets)
    v4 = [t for t in targets if isinstance(_ip_literal(t), ipaddress.IPv4Address)]
    v6 = [t for t in targets if isinstance(_ip_literal(t), ipaddress.IPv6Address)]
    out = [t for t in targets if _ip_literal(t) is None]
    for scheme, group in (("ipv4:", v4), ("ipv6:", v6)):
        if len(group) > 1:
            out.insert(0, scheme + ",".join(group))
        elif group:
            out.insert(0, group[0])
    return out


def is_fleet(target: str) -> bool:
    """Whether ``target`` names, or may resolve to, several replicas."""
    if target.startswith("dns:"):
        return True
    return target.startswith(("ipv4:", "ipv6:")) and "," in target


def dns_name(target: str) -> tuple[str, str] | None:
    """The host name and port of a ``dns:`` target (grpc's default port 443), None for any other target."""
    if not target.startswith("dns:"):
        return None
    name = target[4:]
    if name.startswith("//"):
        name = name[2:].partition("/")[2]  # dns://AUTHORITY/name:port: the authority is grpc's, not ours
    host, _, port = name.rpartition(":")
    if not port.isdigit():
        host, port = name, "443"
    return host.strip("[]"), port


def dns_authority(target: str) -> str:
    """The DNS server a ``dns://AUTHORITY/name`` target names (``""``: the machine's resolver)."""
    return target[6:].partition("/")[0] if target.startswith("dns://") else ""


def replica_addresses(target: str) -> list[str]:
    """Every ``host:port`` a target stands for now: a ``dns:`` name is resolved afresh, by the machine's resolver,
    or by the target's own DNS server where it names one (``dns://AUTHORITY/name``), as grpc does."""
    if target.startswith(("ipv4:", "ipv6:")):
        return [a for a in target[5:].split(",") if a]
    name = dns_name(target)
    if name is None:
        return [target]
    host, port = name
    authority = dns_authority(target)
    if authority:
        hosts = resolve_at(authority, host)
    else:
        hosts = [str(info[4][0]) for info in socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)]
    return list(dict.fromkeys(f"[{h}]:{port}" if ":" in h else f"{h}:{port}" for h in hosts))
