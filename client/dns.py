"""Asking one DNS server for a name's addresses: the ``AUTHORITY`` of a ``dns://AUTHORITY/name:port`` target.

grpc resolves such a target at that server, not the machine's resolver (a name only it knows, like a test's or
a cluster's private zone). :meth:`EngineClient.stop` must find the same replicas to reach the owner, so it asks
the same server: one ``A`` and one ``AAAA`` query over UDP (RFC 1035, with an EDNS0 buffer of 4,096 bytes
(RFC 6891) so that a few hundred replicas fit in one answer), as grpc's c-ares resolver does.

Example::

    resolve_at("10.96.0.10", "engines.default.svc.cluster.local")   # ['10.1.2.3', '10.1.2.4']
"""

from __future__ import annotations

import secrets
import socket
import struct

__all__ = ["resolve_at"]

_A, _AAAA, _IN, _OPT = 1, 28, 1, 41
_UDP_BUFFER = 4096
_FAMILY = {_A: (socket.AF_INET, 4), _AAAA: (socket.AF_INET6, 16)}


def resolve_at(server: str, name: str, timeout: float = 2.0) -> list[str]:
    """The IPv4 and IPv6 addresses of ``name`` that ``server`` (``host``, ``host:port``, ``[v6]:port``; port 53
    by default) answers with; ``[]`` if it has none. Raises :class:`OSError` if it does not answer, refuses, or
    answers nonsense, or if ``server`` or ``name`` cannot be asked at all."""
    try:
        host, port = _split(server)
        queries = {qtype: _query(name, qtype) for qtype in (_A, _AAAA)}
    except (ValueError, UnicodeError) as error:  # a port that is no number, a label over 63 characters
        raise OSError(f"cannot ask {server!r} for {name!r}: {error}") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    addresses: list[str] = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        for qtype, (ident, query) in queries.items():
            sock.send(query)
            while True:  # a stray datagram (an earlier query's late answer) is not ours: read on
                reply = sock.recv(_UDP_BUFFER)
                if len(reply) >= 12 and struct.unpack_from("!H", reply)[0] == ident:
                    break
            try:
                addresses += _answers(reply, qtype)
            except (struct.error, IndexError) as error:  # an answer cut short or malformed
                raise OSError(f"{server!r} sent a malformed DNS answer for {name!r}: {error}") from None
    return list(dict.fromkeys(addresses))


def _split(server: str) -> tuple[str, int]:
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, int(port)
    return server, 53


def _query(name: str, qtype: int) -> tuple[int, bytes]:
    """A fresh query id, and the query."""
    ident = secrets.randbelow(1 << 16)
    header = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 1)  # recursion desired; one question, one OPT record
    labels = b"".join(bytes([len(label)]) + label for label in name.rstrip(".").encode("idna").split(b"."))
    opt = b"\x00" + struct.pack("!HHIH", _OPT, _UDP_BUFFER, 0, 0)  # EDNS0: answers up to 4,096 bytes over UDP
    return ident, header + labels + b"\x00" + struct.pack("!HH", qtype, _IN) + opt


def _answers(reply: bytes, qtype: int) -> list[str]:
    flags, questions, answers = struct.unpack_from("!HHH", reply, 2)
    rcode = flags & 0xF
    if rcode == 3:  # NXDOMAIN: the name does not exist there
        return []
    if rcode:
        raise OSError(f"the DNS server refused the query (rcode {rcode})")
    offset = 12
    for _ in range(questions):
        offset = _skip_name(reply, offset) + 4
    found = []
    for _ in range(answers):
        offset = _skip_name(reply, offset)
        rtype, rclass, _ttl, length = struct.unpack_from("!HHIH", reply, offset)
        offset += 10
        family, size = _FAMILY.get(rtype, (None, 0))
        if rtype == qtype and rclass == _IN and family is not None and length == size:
            found.append(socket.inet_ntop(family, reply[offset : offset + length]))
        offset += length  # a CNAME on the way, or another type: its address records follow in the same answer
    return found


def _skip_name(reply: bytes, offset: int) -> int:
    while True:
        length = reply[offset]
        if length & 0xC0 == 0xC0:  # a pointer to a name earlier in the message ends this one
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length
