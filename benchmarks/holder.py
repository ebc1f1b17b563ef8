"""A client process to be SIGKILLed mid-stream: the disconnect figure's client for the bare and project servers.

``python -m benchmarks.holder KIND ADDRESS STREAMS PREFIX PACE`` opens ``STREAMS`` cancel probes (request ids
``PREFIX-0``...) paced at ``PACE`` seconds on the ``KIND`` ("bare" or "project") server at ``ADDRESS``, keeps
reading them, prints ``held`` once each has delivered an item, and reads on until it is killed. The harness
SIGKILLs it and asks the server when each probe's engine saw its end. A ``drop`` line on its stdin makes it
shut down its connections first (:mod:`.drop`) and print ``dropped TIME``.
"""

from __future__ import annotations

import asyncio
import sys

from .bare_server import run
from .clients import Call, connect
from .drop import drop_connections

__all__ = ["main"]

HOLD = 3600.0


async def hold(kind: str, address: str, streams: int, prefix: str, pace: float) -> None:
    client = connect(kind, address)
    firsts: list[asyncio.Future[None]] = []

    async def read(call: Call, first: asyncio.Future[None]) -> None:
        async for _ in call:
            if not first.done():
                first.set_result(None)

    readers = []
    for i in range(streams):
        firsts.append(asyncio.get_running_loop().create_future())
        call = client.probe(f"{prefix}-{i}", 1_000_000, pace, timeout=HOLD)
        readers.append(asyncio.ensure_future(read(call, firsts[-1])))
    await asyncio.wait_for(asyncio.gather(*firsts), 30)
    print("held", flush=True)
    command = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if command.strip() == "drop":
        print(f"dropped {drop_connections()!r}", flush=True)
    await asyncio.gather(*readers, return_exceptions=True)  # the streams break after a drop
    await asyncio.sleep(HOLD)  # until the SIGKILL


def main(argv: list[str] | None = None) -> None:
    kind, address, streams, prefix, pace = argv if argv is not None else sys.argv[1:]
    run(hold(kind, address, int(streams), prefix, float(pace)), "auto")


if __name__ == "__main__":
    main()
