"""Request ids and stop keys: their forms, their uniqueness, and a forked child's own bytes."""

from __future__ import annotations

import base64
import os
import uuid

import pytest

from engine_runtime.server import ids


def test_a_request_id_is_a_version_4_uuid_in_its_text_form() -> None:
    for _ in range(2_000):  # every value of the variant nibble shows up
        text = ids.request_id()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_a_stop_key_is_128_bits_of_url_safe_base64() -> None:
    key = ids.stop_key()
    assert len(key) == 22 and "=" not in key
    assert len(base64.urlsafe_b64decode(key + "==")) == 16


def test_no_bytes_are_handed_out_twice_across_pool_refills() -> None:
    seen = {ids.random16() for _ in range(3 * 4096 // 16 + 7)}
    assert len(seen) == 3 * 4096 // 16 + 7
    assert len({ids.request_id() for _ in range(10_000)}) == 10_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_bytes() -> None:
    ids.random16()  # the pool now holds chunks that a child would inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next 16 bytes, then out at once (no pytest teardown in the child)
        os.write(write, ids.random16())
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16
    assert child != ids.random16()
