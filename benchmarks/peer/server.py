"""The peer's server: the benchmark engines on the origin's runtime, one process, file discovery, TCP plane.

Run by the harness as ``<peer venv>/bin/python -m benchmarks.peer.server`` with ``DYN_FILE_KV`` (a fresh
directory), ``DYN_TCP_RPC_HOST`` and ``DYN_TCP_RESPONSE_STREAM_HOST`` set to 127.0.0.1: no etcd, no NATS. It logs
``peer-server listening on HOST:PORT`` on stderr once its own client sees it in discovery (the line the harness
waits for, as for the other servers). Endpoints, under ``bench.peer``:

- ``count``: ``{"count", "size", "delay_s"}`` -> ``count`` items ``{"index": i, "payload": "x" * size}``,
  ``delay_s`` apart (0: flat out), checking ``context.is_stopped()`` per item: the work per item of the
  project's ``count`` engine and the bare server's handler;
- ``probe``: like ``count``, under ``{"id"}``; when it ends before its last item (a kill, a disconnect) its
  ``finally`` records ``time.time()``: the moment the engine itself learnt of it (at its next step: the
  ``context.is_stopped()`` check, or the runtime closing it at its ``yield``);
- ``drain``: paced items; once ``context.is_stopped()``, it yields ``drain`` more items (an engine that finishes
  its work on a stop) and records when it noticed the stop and how many items it yielded in all;
- ``notes``: one item, ``{id: record}`` of the probes and drains so far, and forgets them.
"""

import asyncio
import os
import signal
import sys
import time

import uvloop
from dynamo.runtime import DistributedRuntime

NAMESPACE = "bench.peer"
MAX_NOTES = 100_000  # bounds what a long run can make the engines remember, should nobody collect

notes: dict[str, dict[str, float]] = {}


def note(key: str, **record: float) -> None:
    if len(notes) >= MAX_NOTES:
        notes.clear()
    notes.setdefault(key, {}).update(record)


async def count(request, context):
    payload = "x" * request.get("size", 16)
    delay = request.get("delay_s", 0.0)
    for index in range(request["count"]):
        if context.is_stopped():
            return
        if delay > 0 and index:
            await asyncio.sleep(delay)
        yield {"index": index, "payload": payload}


async def probe(request, context):
    sent = 0
    try:
        async for item in count(request, context):
            yield item
            sent += 1
    finally:
        # It learns of a kill or a disconnect at its next step: `count` sees `context.is_stopped()` and returns,
        # or the runtime throws GeneratorExit at its `yield`; whichever comes first.
        if sent < request["count"]:
            note(request["id"], killed_at=time.time(), killed=context.is_killed(), stopped=context.is_stopped())


async def drain(request, context):
    yielded = 0
    try:
        for index in range(request["count"]):
            if context.is_stopped():
                note(request["id"], stop_noticed_at=time.time())
                for extra in range(request["drain"]):
                    yielded += 1
                    yield {"index": index + extra, "payload": "after-stop"}
                return
            if index:
                await asyncio.sleep(request["delay_s"])
            yielded += 1
            yield {"index": index, "payload": "x" * 16}
    finally:
        note(request["id"], yielded=yielded)


async def take_notes(request, context):
    global notes
    taken, notes = notes, {}
    yield taken


async def main() -> None:
    loop = asyncio.get_running_loop()
    # Nothing to drain in a benchmark server: SIGTERM ends it at once, as the harness expects of every server.
    loop.add_signal_handler(signal.SIGTERM, os._exit, 0)
    runtime = DistributedRuntime(loop, "file", "tcp")
    engines = {"count": count, "probe": probe, "drain": drain, "notes": take_notes}
    serving = [
        asyncio.ensure_future(runtime.endpoint(f"{NAMESPACE}.{name}").serve_endpoint(fn))
        for name, fn in engines.items()
    ]
    client = await runtime.endpoint(f"{NAMESPACE}.count").client()
    await client.wait_for_instances()
    address = client.instances()[0].transport.address.split("/", 1)[0]
    print(f"peer-server listening on {address}", file=sys.stderr, flush=True)
    await asyncio.gather(*serving)


if __name__ == "__main__":
    uvloop.run(main())
