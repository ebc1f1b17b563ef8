"""Encoding of `engine.v1.GenerateResponse` on the hot path, and parsing of what clients send.

A response is ``repeated google.protobuf.Any items = 1; FinishReason finish_reason = 2``. Building an ``Any``
object per item costs more than the engine's own work for small items, so each item is framed by hand as the
bytes protobuf itself would write (and any protobuf parser reads back)::

    0x0A len(any) | 0x0A len(url) url | 0x12 len(value) value        one item (field 1, an Any)
    0x10 reason                                                        the finish reason (field 2), last only

The framing is checked against protobuf's own serializer in the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from .errors import InvalidRequest

__all__ = ["TYPE_URL_PREFIX", "encode_response", "item_encoder", "parse"]

TYPE_URL_PREFIX = "type.googleapis.com/"

M = TypeVar("M", bound=Message)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_varint(n) for n in range(128)]


def item_encoder(cls: type[Message], mismatch: Callable[[Any], None] | None = None) -> Callable[[Message], bytes]:
    """A function framing one ``cls`` message as a ``GenerateResponse.items`` entry.

    An item of another class is first given to ``mismatch`` (which raises if the item is not acceptable): the
    type check rides along with the framing, so the hot path pays one call per item, not two.
    """
    url = (TYPE_URL_PREFIX + cls.DESCRIPTOR.full_name).encode()
    head = b"\x0a" + _varint(len(url)) + url + b"\x12"
    # Everything before the value depends only on the value's length: frame each length once.
    prefixes: dict[int, bytes] = {}

    def prefix(n: int) -> bytes:
        value_len = _varint(n)
        framed = b"\x0a" + _varint(len(head) + len(value_len) + n) + head + value_len
        if len(prefixes) < 4096:
            prefixes[n] = framed
        return framed

    def encode(item: Message) -> bytes:
        if type(item) is not cls and mismatch is not None:
            mismatch(item)
        value = item.SerializeToString()
        return (prefixes.get(len(value)) or prefix(len(value))) + value

    return encode


def encode_response(items: list[bytes], finish_reason: int = 0) -> bytes:
    """A serialized ``GenerateResponse`` from framed items and, on the last message, the finish reason."""
    if finish_reason:
        return b"".join(items) + b"\x10" + _varint(finish_reason)
    return b"".join(items)


def parse(cls: type[M], data: bytes, what: str) -> M:
    """Parse ``data`` as ``cls`` or raise :class:`InvalidRequest` naming ``what`` failed to parse."""
    try:
        return cls.FromString(data)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise InvalidRequest(f"{what} does not parse as {cls.DESCRIPTOR.full_name}: {error}") from None
