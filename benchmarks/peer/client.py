"""The peer's client: measurements through the origin's own Python client, driven by the harness over pipes.

``python -m benchmarks.peer.client agent``: reads one JSON command a line on stdin (``{"op": NAME, ...args}``),
runs it against the peer's server (found through the same ``DYN_FILE_KV`` directory), and answers one JSON line
on stdout (``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``). The timing is done here, in the
client's process, as the harness times the other two servers in its own.

``python -m benchmarks.peer.client hold N PREFIX PACE``: opens ``N`` probe streams paced at ``PACE`` seconds (ids
``PREFIX-i``), keeps reading them, prints ``held`` once each has delivered an item, and waits to be SIGKILLed
(the disconnect figure).

How the peer's client ends a stream early (read from its ``_core.pyi``): ``Context.stop_generating()`` is the
graceful stop (the context passed to ``generate(..., context=ctx)``); there is no ``kill``: dropping the
response stream is the kill (the runtime reports ``cancellation.signal="stream_drop"``, then ``"kill"``
upstream). Cancelling the task that iterates the stream is not enough while the stream object lives on.
"""

import asyncio
import itertools
import json
import random
import sys
import time
import uuid

import uvloop
from dynamo.runtime import Context, DistributedRuntime

from benchmarks.drop import drop_connections
from benchmarks.report import percentile

NAMESPACE = "bench.peer"
PAYLOAD = 16
SLACK = 30.0


class Peer:
    def __init__(self, runtime):
        self.runtime = runtime
        self.clients = {}

    async def client(self, name):
        if name not in self.clients:
            client = await self.runtime.endpoint(f"{NAMESPACE}.{name}").client()
            await asyncio.wait_for(client.wait_for_instances(), SLACK)
            self.clients[name] = client
        return self.clients[name]

    async def start(self, name, request, context=None):
        return await (await self.client(name)).generate(request, annotated=False, context=context)

    async def notes(self):
        taken = {}
        async for item in await self.start("notes", {}):
            taken.update(item)
        return taken

    async def throughput(self, items):
        stream = await self.start("count", {"count": items, "size": PAYLOAD})
        start, got = time.perf_counter(), 0
        async for _ in stream:
            got += 1
        elapsed = time.perf_counter() - start
        if got != items:
            raise RuntimeError(f"a stream of {items} items delivered {got}")
        return {"rate": got / elapsed, "elapsed_s": elapsed}

    async def first_response(self, calls):
        times = []
        for _ in range(calls):
            start, first = time.perf_counter(), None
            async for _ in await self.start("count", {"count": 1, "size": PAYLOAD}):
                if first is None:
                    first = time.perf_counter() - start
            times.append(first * 1000)
        return {"ms": times}

    async def cancel(self, probes, pace, seed):
        rng, sent = random.Random(seed), {}
        for i in range(probes):
            request_id = f"cancel-{i}-{uuid.uuid4().hex[:8]}"
            stream = await self.start("probe", {"id": request_id, "count": 100_000, "delay_s": pace, "size": PAYLOAD})
            wanted, got = rng.randint(1, 3), 0
            async for _ in stream:
                got += 1
                if got >= wanted:
                    break
            await asyncio.sleep(rng.uniform(0, pace))
            sent[request_id] = time.time()
            del stream  # the kill (its Python client has no other): the last reference goes, Rust drops it
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the engine learns of a drop at its next step: a few paces, or much later
        return _noticed(sent, await self.notes())

    async def stop(self, streams, before, drain, pace):
        runs = []
        for i in range(streams):
            request_id, context = f"stop-{i}-{uuid.uuid4().hex[:8]}", Context()
            request = {"id": request_id, "count": 100_000, "delay_s": pace, "drain": drain}
            received, stopped_at, ending = 0, None, "ended normally (no error, no marker)"
            try:
                async for _ in await self.start("drain", request, context):
                    received += 1
                    if received == before:
                        stopped_at = time.time()
                        context.stop_generating()
            except Exception as error:  # how the stream ended is the measurement
                ending = f"raised {type(error).__name__}: {error}"[:128]
            runs.append(
                {"id": request_id, "received": received, "before": before, "stopped_at": stopped_at, "ending": ending}
            )
        await asyncio.sleep(0.2)
        notes = await self.notes()
        for run in runs:
            run.update(notes.get(run.pop("id"), {}))
        return {"runs": runs}

    async def paced(self, streams, items, pace):
        gaps, firsts, errors, said, completed = [], [], {}, {}, 0

        async def one():
            nonlocal completed
            arrivals = []
            try:
                async for _ in await self.start("count", {"count": items, "size": PAYLOAD, "delay_s": pace}):
                    arrivals.append(time.perf_counter())
            except Exception as error:  # counted by kind, as the harness counts grpc status codes
                errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1
                said.setdefault(type(error).__name__, str(error)[:128])
                return
            gaps.extend((b - a) * 1000 for a, b in itertools.pairwise(arrivals))
            if arrivals:
                firsts.append(arrivals[0] - start)
            completed += len(arrivals) == items

        cpu, start = time.process_time(), time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(streams))), SLACK + items * pace + streams / 100)
        wall = time.perf_counter() - start
        return {
            "completed": completed,
            "errors": errors,
            "error_messages": said,
            "p50_gap_ms": percentile(gaps, 50) if gaps else None,
            "p99_gap_ms": percentile(gaps, 99) if gaps else None,
            "max_gap_ms": max(gaps) if gaps else None,
            "wall_s": wall,
            "all_open_s": max(firsts) if firsts else None,
            "client_cpu_share": (time.process_time() - cpu) / wall,
        }


def _noticed(sent, notes):
    """Latency from each client-side event to the engine's record of it, and the probes it never recorded."""
    latencies = [(notes[r]["killed_at"] - t) * 1000 for r, t in sent.items() if "killed_at" in notes.get(r, {})]
    return {"latencies_ms": latencies, "missing": sum(1 for r in sent if "killed_at" not in notes.get(r, {}))}


async def agent(peer):
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        op = command.pop("op")
        try:
            answer = {"ok": True, "result": await getattr(peer, op)(**command)}
        except Exception as error:  # reported to the harness, which records the figure as failed
            answer = {"ok": False, "error": f"{type(error).__name__}: {error}"[:500]}
        print(json.dumps(answer), flush=True)


async def hold(peer, streams, prefix, pace):
    """Open paced probes and keep reading them (a client mid-stream), then wait for the SIGKILL."""
    first, tasks = [], []

    async def read(stream, got):
        async for _ in stream:
            if not got.done():
                got.set_result(None)

    for i in range(streams):
        request = {"id": f"{prefix}-{i}", "count": 1_000_000, "delay_s": pace, "size": PAYLOAD}
        first.append(asyncio.get_running_loop().create_future())
        tasks.append(asyncio.ensure_future(read(await peer.start("probe", request), first[-1])))
    await asyncio.wait_for(asyncio.gather(*first), SLACK)
    print("held", flush=True)
    command = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if command.strip() == "drop":  # shut its connections down first (benchmarks/drop.py), then the SIGKILL
        print(f"dropped {drop_connections()!r}", flush=True)
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(3600)


async def main(argv):
    peer = Peer(DistributedRuntime(asyncio.get_running_loop(), "file", "tcp"))
    await peer.client("count")
    if argv[0] == "hold":
        await hold(peer, int(argv[1]), argv[2], float(argv[3]))
    else:
        print(json.dumps({"ok": True, "result": "ready"}), flush=True)
        await agent(peer)


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1:]))
