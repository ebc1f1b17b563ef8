"""The writer's split of a batch that would pass the message size limit (plain bytes, no server)."""

from __future__ import annotations

import pytest

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.server import ResourceExhausted
from engine_runtime.server.writer import split_messages


def framed(size: int) -> bytes:
    """One `GenerateResponse.items` entry whose Any value is ``size`` bytes."""
    item = pb.GenerateResponse()
    item.items.add(type_url="type.googleapis.com/x.Y", value=b"v" * size)
    return item.SerializeToString()


def decoded(messages: list[tuple[bytes, int, bool]]) -> list[list[int]]:
    return [[len(a.value) for a in pb.GenerateResponse.FromString(m).items] for m, _, _ in messages]


def test_a_batch_under_the_limit_is_one_message_with_the_finish_reason() -> None:
    ((message, items, last),) = split_messages("e", [framed(10), framed(20)], 1, 1000)
    assert items == 2 and last and pb.GenerateResponse.FromString(message).finish_reason == 1


def test_a_batch_over_the_limit_is_split_under_it_keeping_order_and_the_reason_last() -> None:
    batch = [framed(300), framed(300), framed(300), framed(900)]
    out = list(split_messages("e", batch, 2, 1024))
    assert decoded(out) == [[300, 300, 300], [900]]
    assert all(len(m) <= 1024 for m, _, _ in out) and [n for _, n, _ in out] == [3, 1]
    assert [last for _, _, last in out] == [False, True]
    assert pb.GenerateResponse.FromString(out[-1][0]).finish_reason == 2


def test_an_item_too_large_for_any_message_fails_after_the_items_before_it() -> None:
    out = []
    with pytest.raises(ResourceExhausted, match="item of 2[0-9]{3} bytes, over the message limit of 1024"):
        for message in split_messages("e", [framed(100), framed(2000), framed(5)], 0, 1024):
            out.append(message)
    assert decoded(out) == [[100]]
