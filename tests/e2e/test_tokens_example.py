"""examples/tokens.py served by real replicas: `complete` resumes from a prefix, and its stream survives the death
of the replica serving it with exactly the tokens of the whole completion."""

from __future__ import annotations

import asyncio
import re

from benchmarks.fleet import Fleet, fleet
from engine_runtime.client import EngineClient
from engine_runtime.generated.examples.v1.tokens_pb2 import CompleteRequest, Token
from engine_runtime.server import Context, FinishReason
from examples.tokens import completion
from tests.helpers import fetch_metrics, value

PROMPT = "once upon a time"
METRICS = re.compile(r"metrics at (\S+)")


def serving_complete(f: Fleet) -> int:
    """The replica whose metrics count one `complete` generation in flight."""
    busy = []
    for replica in f.replicas:
        url = next(m.group(1) for line in replica.lines if (m := METRICS.search(line)))
        if value(fetch_metrics(url), "engine_requests_in_flight", engine="complete") == 1:
            busy.append(replica.index)
    [index] = busy
    return index


def test_complete_resumes_from_a_prefix_and_survives_its_replica() -> None:
    async def scenario(f: Fleet) -> tuple[list[str], list[str], FinishReason | None, int]:
        async with EngineClient([f.target]) as client:
            remote = await client.get("complete")
            complete = remote.downcast(CompleteRequest, Token)
            assert complete is not None and remote.resumable
            # Resumed by hand: the tokens after the first 7, computed again but not sent again.
            tail = [
                t.text
                async for t in await complete.generate(
                    CompleteRequest(prompt=PROMPT, max_tokens=12), Context(resume_from=7)
                )
            ]
            stream = await complete.generate(CompleteRequest(prompt=PROMPT, max_tokens=40, delay_s=0.01))
            tokens = []
            async for token in stream:
                tokens.append(token.text)
                if len(tokens) == 8:
                    await asyncio.to_thread(lambda: f.kill(serving_complete(f)))
            return tail, tokens, stream.finish_reason, client.migrations

    with fleet(3, targets=["examples.tokens:registry"], args=["--metrics-port", "0"]) as f:
        tail, tokens, finish, migrations = asyncio.run(scenario(f))
    assert tail == completion(PROMPT, 12)[7:]
    assert tokens == completion(PROMPT, 40) and finish is FinishReason.COMPLETED and migrations == 1
