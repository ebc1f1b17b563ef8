"""A resumable engine that is not a counter: it continues a prompt token by token, like a language model.

Each token follows from the prompt and every token before it (a hash chain stands in for the model), so the
engine cannot just skip ahead: resumed with ``ctx.resume_from = N``, it first rebuilds its state from the prompt
and the N tokens the client already has, without sending them (a model's prefill), then continues with token
N. Because the tokens are deterministic, the resumed stream is exactly the rest of the one that broke::

    engine-server examples.tokens:registry --port 50051
    engine-client generate complete '{"prompt": "once upon a time", "max_tokens": 20, "delay_s": 0.1}'

Behind several replicas, ``EngineClient`` continues a broken stream of ``complete`` on another one
(docs/scaling.md); :func:`completion` is what the whole stream holds.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from engine_runtime.generated.examples.v1.tokens_pb2 import CompleteRequest, Token
from engine_runtime.server import Context, EngineRegistry

__all__ = ["completion", "registry"]

VOCABULARY = (
    "the", "a", "dragon", "slept", "under", "old", "mountain", "and", "dreamed", "of", "gold", "while", "rain",
    "fell", "on", "quiet", "village", "where", "nobody", "knew", "its", "name", "until", "one", "morning",
)  # fmt: skip

registry = EngineRegistry()


def _start(prompt: str) -> bytes:
    return hashlib.blake2b(prompt.encode(), digest_size=16).digest()


def _step(state: bytes) -> tuple[str, bytes]:
    """The next token and the state after it (a stand-in for one step of a model)."""
    state = hashlib.blake2b(state, digest_size=16).digest()
    return VOCABULARY[int.from_bytes(state[:4], "big") % len(VOCABULARY)], state


def completion(prompt: str, max_tokens: int) -> list[str]:
    """Every token of ``complete``'s stream for ``prompt``, in order.

    Example::

        completion("once upon a time", 3)     # the same three words on every machine
    """
    state, tokens = _start(prompt), []
    for _ in range(max_tokens):
        token, state = _step(state)
        tokens.append(token)
    return tokens


@registry.engine("complete", request=CompleteRequest, response=Token, resumable=True)
async def complete(request: CompleteRequest, ctx: Context) -> AsyncIterator[Token]:
    """Continues `prompt` with `max_tokens` tokens, `delay_s` apart; resumable from any token."""
    state = _start(request.prompt)
    first = min(ctx.resume_from, max(request.max_tokens, 0))
    for _ in range(first):  # rebuild what the client's tokens leave: computed again, never sent again
        _, state = _step(state)
    for position in range(first, request.max_tokens):
        if ctx.is_stopped():
            return
        if request.delay_s > 0 and position > first:
            await asyncio.sleep(request.delay_s)
        token, state = _step(state)
        yield Token(text=token)
