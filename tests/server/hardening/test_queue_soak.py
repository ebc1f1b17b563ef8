"""A bounded soak of the admission queue: random enqueue, cancel, stop, kill, deadline and finish, seeded.

Hundreds of calls at an engine with a small concurrency limit and queue, each ending one random way, over real
loopback channels. Whatever happens, every call ends with a status its way of ending allows, and afterwards the
queue, the slots and the in-flight table are empty.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass

import grpc
import pytest

from engine_runtime.generated.engine.v1 import engine_pb2_grpc as pbg
from engine_runtime.generated.examples.v1.examples_pb2 import CountRequest
from tests.conftest import ServerFactory
from tests.helpers import OWN_CONNECTION, generate_request, stop_request

pytestmark = pytest.mark.asyncio

CALLS = 300
AT_ONCE = 16
WAYS = ("finish", "finish", "cancel", "stop", "kill", "deadline")
ALLOWED = {
    "finish": {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED},
    "cancel": {grpc.StatusCode.CANCELLED, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED},
    "stop": {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED},
    "kill": {grpc.StatusCode.ABORTED, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED},
    "deadline": {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED},
}


@dataclass(frozen=True)
class Plan:
    """One call of the soak, drawn before any runs so that the seed alone decides the plan."""

    index: int
    way: str
    request: CountRequest
    priority: int
    timeout: float
    delay: float

    @classmethod
    def draw(cls, rng: random.Random, index: int) -> Plan:
        way = rng.choice(WAYS)
        request = CountRequest(count=rng.randint(1, 4), delay_s=rng.choice((0.0, 0.001, 0.003)))
        timeout = rng.uniform(0.005, 0.08) if way == "deadline" else 30
        return cls(index, way, request, rng.randint(-2, 2), timeout, rng.uniform(0, 0.02))


async def one_call(stub: pbg.EngineServiceAsyncStub, plan: Plan) -> tuple[str, grpc.StatusCode]:
    way, delay = plan.way, plan.delay
    request = generate_request("probe", plan.request, f"soak-{plan.index}", plan.priority)
    call = stub.Generate(request, timeout=plan.timeout)
    try:
        if way in ("cancel", "stop", "kill"):
            metadata = await call.initial_metadata()
            await asyncio.sleep(delay)
            if way == "cancel":
                call.cancel()
            elif metadata:  # no metadata: it was refused (the queue was full)
                await stub.Stop(await stop_request(call, kill=way == "kill"))
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as error:
        if error.code() is grpc.StatusCode.NOT_FOUND:  # the Stop came after the call had ended
            return way, grpc.StatusCode.OK
        return way, error.code()
    except asyncio.CancelledError:
        return way, grpc.StatusCode.CANCELLED
    return way, (await call.code())


async def test_random_enqueue_cancel_and_finish_leave_nothing_behind(make_server: ServerFactory) -> None:
    server = await make_server(max_engine_concurrency=2, max_queue=12)
    rng = random.Random(13)
    plans = [Plan.draw(rng, index) for index in range(CALLS)]
    seen: Counter[tuple[str, str]] = Counter()
    exits: Counter[str] = Counter()
    server.inflight.admission.on_left(lambda _, cause: exits.update([cause.value if cause else "admitted"]))
    async with grpc.aio.insecure_channel(server.addresses[0], options=OWN_CONNECTION) as channel:
        stub = pbg.EngineServiceStub(channel)
        gate = asyncio.Semaphore(AT_ONCE)

        async def gated(plan: Plan) -> tuple[str, grpc.StatusCode]:
            async with gate:
                return await one_call(stub, plan)

        results = await asyncio.wait_for(asyncio.gather(*(gated(plan) for plan in plans)), 120)
        for way, code in results:
            assert code in ALLOWED[way], (way, code)
            seen[way, code.name] += 1
        assert await server.inflight.wait_empty(10), list(server.inflight)
    assert server.inflight.queued() == 0 and server.inflight.running() == 0 and len(server.inflight) == 0
    # The soak did exercise the queue: a full queue refused calls, and calls left it every way there is.
    assert sum(n for (_, code), n in seen.items() if code == "RESOURCE_EXHAUSTED") > 0, seen
    assert {"admitted", "client_cancel", "stop_request", "deadline"} <= set(exits), exits
