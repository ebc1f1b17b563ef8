"""The hand framing of GenerateResponse agrees with protobuf's own encoding."""

from __future__ import annotations

import pytest

from engine_runtime.generated.engine.v1 import engine_pb2 as pb
from engine_runtime.generated.examples.v1.examples_pb2 import CountResponse, EchoRequest
from engine_runtime.server import InvalidRequest
from engine_runtime.server.wire import encode_response, item_encoder, parse


def test_hand_framed_responses_match_protobuf() -> None:
    encode = item_encoder(CountResponse)
    items = [CountResponse(index=i, payload="p" * size) for i, size in enumerate([0, 1, 127, 128, 20_000])]
    data = encode_response([encode(item) for item in items], pb.FINISH_REASON_STOPPED)
    parsed = pb.GenerateResponse.FromString(data)
    assert [CountResponse.FromString(a.value) for a in parsed.items] == items
    assert all(a.TypeName() == "examples.v1.CountResponse" for a in parsed.items)
    assert parsed.finish_reason == pb.FINISH_REASON_STOPPED


def test_parse_names_what_failed() -> None:
    with pytest.raises(InvalidRequest, match="the thing does not parse as examples.v1.EchoRequest"):
        parse(EchoRequest, b"\x0a\xff", "the thing")


def test_the_encoder_checks_the_type_as_it_frames() -> None:
    seen: list[object] = []
    encode = item_encoder(CountResponse, seen.append)
    encode(CountResponse(index=1))
    assert seen == []
    framed = encode(EchoRequest(text="odd"))  # `mismatch` accepted it here
    assert seen == [EchoRequest(text="odd")] and framed.endswith(EchoRequest(text="odd").SerializeToString())


def test_many_distinct_lengths_frame_correctly() -> None:
    encode = item_encoder(CountResponse)
    items = [CountResponse(payload="p" * n) for n in range(0, 6000, 1)]
    parsed = pb.GenerateResponse.FromString(encode_response([encode(item) for item in items]))
    assert [CountResponse.FromString(a.value) for a in parsed.items] == items
