"""The loop watchdog names a stall when the loop is back, and a long one while it is still blocked."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from engine_runtime.server.watchdog import LoopWatchdog

pytestmark = pytest.mark.asyncio


async def test_a_long_stall_is_logged_while_it_lasts_and_again_when_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    reported: list[float] = []
    done = threading.Event()

    def report(engine: str, seconds: float) -> None:
        reported.append(seconds)
        done.set()

    watchdog = LoopWatchdog(asyncio.get_running_loop(), 0.05, report, still_blocked=0.3)
    watchdog.start()
    try:
        await asyncio.sleep(0.1)  # let the watchdog take its first beats
        time.sleep(0.8)  # noqa: ASYNC251 (the point: the loop blocked, the watchdog logs meanwhile)
        assert await asyncio.to_thread(done.wait, 10)
    finally:
        watchdog.stop()
    lines = [r for r in caplog.records if r.name == "engine_runtime.watchdog"]
    assert [r.levelno for r in lines] == [logging.ERROR, logging.WARNING]
    assert "still is" in lines[0].getMessage() and "code outside any engine" in lines[0].getMessage()
    assert reported and reported[0] >= 0.6
