"""The loop-stall watchdog: a thread that notices when something blocks the event loop, and says who.

One engine that calls blocking code inside ``async def`` (``time.sleep``, a sync client) stalls every stream
of the server. The watchdog asks the loop for a beat every ``threshold`` seconds from a thread of its own; a
beat that does not come within ``threshold`` is a stall: the watchdog takes the loop thread's stack and the task
it is running (naming the engine and request when it is an engine's), and when the loop is back it logs the
stall with its length and that stack, and reports it (``engine_event_loop_stall_seconds``). A stall still going
on after ``still_blocked`` seconds (five, or ten thresholds) is logged at once too: a loop blocked for good never
comes back to be logged. The cure it points to is a sync engine (:mod:`.threads`).

Example::

    watchdog = LoopWatchdog(asyncio.get_running_loop(), threshold=0.1, report=metrics.stalled)
    watchdog.start()
    ...
    watchdog.stop()
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

from .pump import engine_of

__all__ = ["LoopWatchdog"]

log = logging.getLogger("engine_runtime.watchdog")

Report = Callable[[str, float], None]

STILL_BLOCKED = 5.0
"""Seconds of one stall after which it is logged at once, before it ends (a loop blocked for good never ends)."""


class LoopWatchdog:
    """Watches ``loop`` from a daemon thread; calls ``report(engine, seconds)`` per stall (engine "" if none)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        threshold: float,
        report: Report | None = None,
        *,
        still_blocked: float | None = None,
    ) -> None:
        self.loop = loop
        self.threshold = threshold
        self.still_blocked = still_blocked if still_blocked is not None else max(STILL_BLOCKED, 10 * threshold)
        self.report = report
        self._loop_thread = threading.get_ident()  # made on the loop's thread
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="engine-runtime loop watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.wait(self.threshold):
            beat = threading.Event()
            started = time.monotonic()
            try:
                self.loop.call_soon_threadsafe(beat.set)
            except RuntimeError:
                return  # the loop is closed
            if beat.wait(self.threshold):
                continue
            engine, request_id, stack = self._culprit()
            # A loop blocked for good never comes back to be logged: say so while it is still blocked.
            still = self.still_blocked
            while not beat.wait(self.threshold) and not self._stopped.is_set():
                if still and time.monotonic() - started > still:
                    still = 0
                    log.error(
                        "the event loop has been blocked for over %.0fs by %s, and still is\n%s",
                        time.monotonic() - started,
                        _who(engine, request_id),
                        stack,
                        extra={"engine": engine or None, "request_id": request_id or None},
                    )
            self._stalled(time.monotonic() - started, engine, request_id, stack)

    def _culprit(self) -> tuple[str, str, str]:
        """What the loop thread is doing now: the engine and request of its task (if an engine's), its stack."""
        task = asyncio.current_task(self.loop)
        found = engine_of(task)
        frame = sys._current_frames().get(self._loop_thread)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        return (found[0], found[1], stack) if found is not None else ("", "", stack)

    def _stalled(self, seconds: float, engine: str, request_id: str, stack: str) -> None:
        who = _who(engine, request_id)
        log.warning(
            "the event loop was blocked for %.3fs by %s; blocking code belongs in a sync engine (a plain def)\n%s",
            seconds,
            who,
            stack,
            extra={"engine": engine or None, "request_id": request_id or None, "stall_s": round(seconds, 3)},
        )
        if self.report is not None:
            self.report(engine, seconds)


def _who(engine: str, request_id: str) -> str:
    return f"engine {engine!r} (request {request_id})" if engine else "code outside any engine"
