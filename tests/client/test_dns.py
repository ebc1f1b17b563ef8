"""Asking one DNS server for a name (client/dns.py), against a real DNS server on loopback (benchmarks/fleet_dns.py)."""

from __future__ import annotations

import socket
import threading

import pytest

from benchmarks.fleet_dns import FleetDNS
from engine_runtime.client.dns import resolve_at
from engine_runtime.client.routing import dns_authority, replica_addresses


def test_the_servers_a_records_in_its_order_and_no_aaaa() -> None:
    with FleetDNS(lambda: ["127.0.0.2", "127.0.0.3", "127.0.0.2"]) as dns:
        assert resolve_at(f"127.0.0.1:{dns.port}", "fleet.test") == ["127.0.0.2", "127.0.0.3"]
        assert resolve_at(f"127.0.0.1:{dns.port}", "FLEET.test.") == ["127.0.0.2", "127.0.0.3"]  # names ignore case
        assert dns.queries == 4  # A and AAAA, each time


def test_a_name_the_server_does_not_have_resolves_to_nothing() -> None:
    with FleetDNS(lambda: ["127.0.0.2"]) as dns:
        assert resolve_at(f"127.0.0.1:{dns.port}", "other.test") == []


def test_a_server_that_does_not_answer_times_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answering
        with pytest.raises(TimeoutError):
            resolve_at(f"127.0.0.1:{silent.getsockname()[1]}", "fleet.test", timeout=0.2)


def test_a_dns_target_with_an_authority_is_resolved_there_as_grpc_does() -> None:
    with FleetDNS(lambda: ["127.0.0.2", "127.0.0.3"]) as dns:
        target = dns.target(5000)
        assert dns_authority(target) == f"127.0.0.1:{dns.port}"
        assert replica_addresses(target) == ["127.0.0.2:5000", "127.0.0.3:5000"]
    assert dns_authority("dns:///fleet.test:5000") == ""
    assert dns_authority("ipv4:127.0.0.1:1") == ""


def test_a_malformed_answer_or_server_address_is_an_os_error_naming_it() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as liar:
        liar.bind(("127.0.0.1", 0))
        liar.settimeout(5)

        def answer_cut_short() -> None:
            query, peer = liar.recvfrom(512)
            # The query's id, then a header that promises an answer the datagram does not hold.
            liar.sendto(query[:2] + b"\x84\x00\x00\x01\x00\x01\x00\x00\x00\x00\x05fle", peer)

        thread = threading.Thread(target=answer_cut_short)
        thread.start()
        with pytest.raises(OSError, match="malformed DNS answer"):
            resolve_at(f"127.0.0.1:{liar.getsockname()[1]}", "fleet.test", timeout=2)
        thread.join(5)
    with pytest.raises(OSError, match="cannot ask"):
        resolve_at("127.0.0.1:dns", "fleet.test")
    with pytest.raises(OSError, match="cannot ask"):
        resolve_at("127.0.0.1", "x" * 64 + ".test")
