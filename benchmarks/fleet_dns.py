"""A DNS name for a fleet, as a Kubernetes headless Service gives one: the A records of the replicas that run now.

A client dials ``dns://127.0.0.1:P/fleet.test:PORT``: grpc's c-ares resolver asks this server (on loopback, never
the machine's resolver), which answers with every live replica's host. The replicas share one port on their own
hosts (``fleet(..., same_port=True)``), since an A record has no port. A scale-out shows in the next answer; a
client asks again when a connection closes (a connection age's GOAWAY), at most every
``grpc.dns_min_time_between_resolutions_ms`` (30 s by default: lower it for a test).

Example::

    with fleet(2, same_port=True) as f, FleetDNS(lambda: f.live_hosts) as dns:
        client = EngineClient(dns.target(f.port))
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

__all__ = ["RESOLVE_OFTEN", "FleetDNS"]

# grpc re-resolves a name at most every 30 s by default: a client of this server re-resolves within 0.2 s.
RESOLVE_OFTEN = [("grpc.dns_min_time_between_resolutions_ms", 200)]

NAME = "fleet.test"
_A, _IN = 1, 1


class FleetDNS:
    """A UDP DNS server on 127.0.0.1 answering ``A fleet.test`` with ``hosts()``, anything else with no answer."""

    def __init__(self, hosts: Callable[[], Sequence[str]], name: str = NAME) -> None:
        self.hosts = hosts
        self.name = name
        self.queries = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port: int = self._socket.getsockname()[1]
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fleet dns", daemon=True)

    def target(self, port: int) -> str:
        """The client target of the fleet's name, resolved by this server."""
        return f"dns://127.0.0.1:{self.port}/{self.name}:{port}"

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                query, peer = self._socket.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(query)
            if reply is not None:
                self.queries += 1
                self._socket.sendto(reply, peer)

    def answer(self, query: bytes) -> bytes | None:
        """The reply to one query packet (None for a packet that is no query)."""
        if len(query) < 17:
            return None
        ident, flags = struct.unpack("!HH", query[:4])
        labels, at = [], 12
        while at < len(query) and query[at]:
            labels.append(query[at + 1 : at + 1 + query[at]].decode("ascii", "replace"))
            at += 1 + query[at]
        end = at + 5
        if flags & 0x8000 or end > len(query):
            return None
        qtype, qclass = struct.unpack("!HH", query[at + 1 : end])
        question = query[12:end]
        asked = ".".join(labels).lower().rstrip(".")
        rcode = 0 if asked == self.name else 3  # NXDOMAIN for any other name
        answers = []
        if rcode == 0 and (qtype, qclass) == (_A, _IN):
            for host in self.hosts():
                # A pointer to the question's name, A, IN, a TTL of 0 (ask again each time), the address.
                answers.append(struct.pack("!HHHIH", 0xC00C, _A, _IN, 0, 4) + socket.inet_aton(host))
        header = struct.pack("!HHHHHH", ident, 0x8400 | (flags & 0x0100) | rcode, 1, len(answers), 0, 0)
        return header + question + b"".join(answers)

    def __enter__(self) -> FleetDNS:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed.set()
        self._thread.join(5)
        self._socket.close()
