"""Scale-out behind a DNS name: a replica added to the fleet gets calls within one connection age (gRFC A9).

The fleet's name is served by benchmarks/fleet_dns.py on loopback (as a headless Service's DNS would), and
the client resolves it with grpc's own c-ares resolver.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from benchmarks.fleet import fleet
from benchmarks.fleet_dns import RESOLVE_OFTEN, FleetDNS
from engine_runtime.client import EngineClient
from engine_runtime.client.remote import RemoteStream
from engine_runtime.generated.examples.v1.examples_pb2 import EchoRequest, EchoResponse

AGE = 2.0


@pytest.mark.asyncio
async def test_a_new_replica_gets_calls_within_one_connection_age() -> None:
    args = ["--log-format", "json", "--max-connection-age", str(AGE), "--drain-timeout", "1"]
    with fleet(2, args=args, same_port=True) as f, FleetDNS(lambda: f.live_hosts) as dns:
        async with EngineClient(dns.target(f.port), options=RESOLVE_OFTEN) as client:
            echo = (await client.get("echo")).downcast(EchoRequest, EchoResponse)
            assert echo is not None
            added = await asyncio.to_thread(f.add)
            since = time.monotonic()
            first_at = None
            # Bounded: one connection age (grpc jitters it by +-10%), the resolution and a connection on top.
            while time.monotonic() - since < AGE * 1.1 + 2 and first_at is None:
                stream = await echo.generate(EchoRequest(text="x"))
                assert isinstance(stream, RemoteStream)
                if await stream.served_by() == added.address:
                    first_at = time.monotonic() - since
                assert [item.text async for item in stream] == ["x"]
                await asyncio.sleep(0.02)
        assert first_at is not None, f"the new replica got no call within {AGE * 1.1 + 2:.1f}s"
        assert [rec for rec in added.records() if rec.get("engine") == "echo"]  # its own records say so too
