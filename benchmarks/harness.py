"""What every figure gets: the sizes of this run, clients to the two shared servers, and fresh servers.

The two shared servers (bare and project) run side by side for the whole run, pinned to the same CPU, and
the figures alternate between them, so both see the same machine at nearly the same moment: on a shared,
noisy machine the ratio is the number that means something.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .clients import Call, Client, connect
from .peer_runtime import Peer
from .procs import Pinning, ServerProcess, bare_command, project_command, running

__all__ = ["FULL", "QUICK", "Bench", "Sizes", "peer_details", "read_all"]

PROJECT_TARGETS = ["benchmarks.engines:registry"]


@dataclass(frozen=True)
class Sizes:
    """How much each figure does. ``QUICK`` is a smoke run of seconds; ``FULL`` what docs/performance.md quotes."""

    repeats: int
    throughput_bare_items: int
    throughput_items: int
    first_response_calls: int
    paced_items: int
    concurrent_streams: int
    concurrent_items: int
    cancel_probes: int
    memory_streams: int
    workers_seconds: float
    channels: int  # separate connections for the many-stream figures
    admission_burst: int  # calls at once at the queued engine
    admission_cancels: int  # queued calls cancelled one by one
    throughput_peer_items: int  # the origin's runtime sends one item a message, like the bare server
    stop_streams: int
    disconnect_rounds: int  # client processes SIGKILLed, each holding disconnect_streams streams
    disconnect_streams: int
    capacity_start: int  # streams of the capacity search's first trial
    capacity_items: int  # items of each stream of a trial
    capacity_seconds: float  # each server's time budget for the search
    hostile_rounds: int  # rounds of the hostile mix (and as many quiet ones before)
    hostile_good: int  # well-behaved streams per round
    fleet_balance_args: tuple[str, ...]  # `python -m benchmarks.fleet_balance` options of figure (n)
    migration_args: tuple[str, ...]  # `python -m benchmarks.migration` options of figure (n)


QUICK = Sizes(
    repeats=1,
    throughput_bare_items=2_000,
    throughput_items=20_000,
    first_response_calls=30,
    paced_items=15,
    concurrent_streams=50,
    concurrent_items=4,
    cancel_probes=10,
    memory_streams=50,
    workers_seconds=1.0,
    channels=2,
    admission_burst=50,
    admission_cancels=20,
    throughput_peer_items=5_000,
    stop_streams=3,
    disconnect_rounds=1,
    disconnect_streams=5,
    capacity_start=100,
    capacity_items=5,
    capacity_seconds=3.0,
    hostile_rounds=1,
    hostile_good=10,
    fleet_balance_args=("--rates", "60", "--seconds", "2", "--warmup", "0.5", "--long-s", "1", "--connection-age", "1"),
    migration_args=("--streams", "6", "--items", "40", "--fault", "kill"),
)

FULL = Sizes(
    repeats=3,
    throughput_bare_items=50_000,
    throughput_items=1_000_000,
    first_response_calls=1_000,
    paced_items=500,
    concurrent_streams=1_000,
    concurrent_items=20,
    cancel_probes=300,
    memory_streams=1_000,
    workers_seconds=5.0,
    channels=10,
    admission_burst=200,
    admission_cancels=300,
    throughput_peer_items=100_000,
    stop_streams=30,
    disconnect_rounds=10,
    disconnect_streams=10,
    capacity_start=500,
    capacity_items=40,
    capacity_seconds=60.0,
    hostile_rounds=5,
    hostile_good=40,
    fleet_balance_args=("--rates", "60", "--seconds", "12"),
    migration_args=(),
)


@dataclass
class Bench:
    """The context of one run, handed to each figure; ``peer`` is None (``peer_reason`` says why) when skipped."""

    sizes: Sizes
    loop: str
    pinning: Pinning
    servers: dict[str, ServerProcess]
    peer: Peer | None = None
    peer_reason: str = ""

    @property
    def client_cpus(self) -> list[int]:
        """Where the client side runs: processes the harness starts as clients are pinned here too."""
        return self.pinning.client_cpus if self.pinning.applied else []

    def client(self, kind: str, private: bool = False) -> Client:
        """A client of the shared ``kind`` ("bare" or "project") server."""
        return connect(kind, self.servers[kind].address, private)

    @contextlib.contextmanager
    def fresh(self, kind: str, extra: Sequence[str] = (), pinned: bool = True) -> Iterator[ServerProcess]:
        """A server of its own for a figure that must not inherit the shared servers' history (memory)."""
        command = bare_command(self.loop) if kind == "bare" else project_command(PROJECT_TARGETS, self.loop, extra)
        cpus = self.pinning.server_cpus if pinned and self.pinning.applied else ()
        with running(f"{kind} server", command, cpus) as server:
            yield server

    @contextlib.asynccontextmanager
    async def clients(self, kind: str, count: int = 1, address: str | None = None) -> AsyncIterator[list[Client]]:
        """``count`` clients (one connection each) of ``address``, or of the shared server; closed on exit."""
        target = address if address is not None else self.servers[kind].address
        made = [connect(kind, target, private=count > 1) for _ in range(count)]
        try:
            yield made
        finally:
            await asyncio.gather(*(c.close() for c in made))


def peer_details(bench: Bench) -> dict[str, Any]:
    """What a figure's details say of the peer: its version, or why it was skipped."""
    if bench.peer is None:
        return {"peer": f"skipped: {bench.peer_reason}"}
    return {"peer": f"ai-dynamo-runtime {bench.peer.version}"}


async def read_all(call: Call, client: Client, clock: Any = None) -> tuple[int, Any, list[float]]:
    """Read a stream to its end: (items, last message, arrival time of every item if ``clock`` is given)."""
    items = 0
    last: Any = None
    arrivals: list[float] = []
    async for message in call:
        n = client.items_in(message)
        items += n
        last = message
        if clock is not None:
            arrivals.extend([clock()] * n)
    return items, last, arrivals
