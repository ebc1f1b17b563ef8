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
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest, CountResponse, EchoRequest, EchoResponse
from engine_runtime.server import FinishReason

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


@pytest.mark.asyncio
async def test_stop_by_id_through_a_dns_authority_target_reaches_the_owner() -> None:
    """The name exists only at the target's own DNS server: Stop must ask it, as grpc did to place the call."""
    with fleet(2, same_port=True) as f, FleetDNS(lambda: f.live_hosts) as dns:
        async with EngineClient(dns.target(f.port)) as client, EngineClient(dns.target(f.port)) as other:
            count = (await client.get("count")).downcast(CountRequest, CountResponse)
            assert count is not None
            stream = await count.generate(CountRequest(count=1000, delay_s=0.01))
            assert isinstance(stream, RemoteStream)
            assert await stream.next_batch()
            # Another client, which never saw the stream, stops it by id and key alone.
            await other.stop(stream.context.id, key=await stream.stop_key())
            rest = [item async for item in stream]
            assert stream.finish_reason is FinishReason.STOPPED and len(rest) < 999
