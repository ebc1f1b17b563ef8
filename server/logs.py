"""Log set-up for ``engine-server``: text or JSON lines, one per event, nothing secret."""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import Code, EngineError
    from .inflight import Generation
    from .outcome import Cause

__all__ = ["JsonFormatter", "RefusalLog", "configure_logging", "log_dequeued", "log_request"]

# Attributes every LogRecord has; anything else was passed with `extra=` and becomes a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and every `extra=` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")]
        return f"{line} {' '.join(fields)}" if fields else line


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread unformatted: formatting and the write happen off the event loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The stock prepare() formats here, on the caller's thread. Our records carry only plain values
        # (strings, numbers), so the writer thread can format them later just as well.
        return record


_STOP = logging.makeLogRecord({"msg": "stop"})


class _Writer:
    """The thread that formats and writes the records: every record waiting at once, in one write.

    A busy server logs a line per request; taking them in batches costs one wake-up and one write per burst
    instead of one per line (``logging.handlers.QueueListener`` wakes and writes per record). Once a record
    arrives the thread lingers ``LINGER`` seconds for the rest of the burst: a line is written at most that late,
    and a server answering thousands of calls a second wakes this thread at most 1 / ``LINGER`` times a second
    (each wake-up takes the GIL from the event loop; measured, waking per record cost a call ~40 us).
    """

    BATCH = 1024
    LINGER = 0.01

    def __init__(self, records: queue.SimpleQueue[logging.LogRecord], handler: logging.StreamHandler[Any]) -> None:
        self.records = records
        self.handler = handler
        self.thread = threading.Thread(target=self._run, name="engine-runtime-log", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Write everything logged so far, then end the thread."""
        if self.thread.is_alive():
            self.records.put(_STOP)
            self.thread.join()

    def _run(self) -> None:
        records, handler = self.records, self.handler
        while True:
            batch = [records.get()]
            if batch[0] is not _STOP:
                time.sleep(self.LINGER)
            while len(batch) < self.BATCH:
                try:
                    batch.append(records.get_nowait())
                except queue.Empty:
                    break
            lines = []
            for record in batch:
                if record is _STOP:
                    continue
                try:
                    lines.append(handler.format(record))
                except Exception:  # a record that cannot be formatted costs its line, not the others
                    handler.handleError(record)
            if lines:
                try:
                    handler.stream.write("\n".join(lines) + "\n")
                    handler.stream.flush()
                except Exception:  # stderr gone (closed pipe): serving goes on without the lines
                    pass
            if _STOP in batch:
                return


_listeners: list[_Writer] = []

# Looked up once: `getLogger` takes the logging module's lock, and the request line is written for every call.
_REQUESTS = logging.getLogger("engine_runtime.requests")


def flush_logs() -> None:
    """Write every line logged so far and stop the writer thread (before an exit that skips ``atexit``)."""
    while _listeners:
        _listeners.pop().stop()
    sys.stderr.flush()


def configure_logging(fmt: str = "text", level: str = "info") -> None:
    """Log to stderr in ``fmt`` (``text`` or ``json``) from a writer thread, so a log line never blocks serving."""
    while _listeners:
        _listeners.pop().stop()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = _Writer(records, handler)
    writer.start()
    _listeners.append(writer)
    # Stopping the writer drains the queue: every line logged before exit is written.
    atexit.register(writer.stop)
    # No line shows the thread, the process or the caller's file and line: not collecting them saves several
    # microseconds per record (the switches of the logging HOWTO's "Optimization" section).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the HOWTO's documented switch for caller information
    root = logging.getLogger()
    root.handlers[:] = [_DeferredQueueHandler(records)]
    root.setLevel(level.upper())


def log_request(generation: Generation, code: Code) -> None:
    """The one line per finished request: engine, request id, status, items, duration, how it ended and why
    (``finish`` is ``migrated`` for a resumable generation a drain handed off), and ``resume_from`` if resumed."""
    if not _REQUESTS.isEnabledFor(logging.INFO):
        return  # `--log-level warning`: not even the fields are gathered
    ctx = generation.context
    ending = generation.ending
    finish = ending.how.value if ending is not None else "failed"
    cause = ending.cause if ending is not None else None
    ended = generation.ended if generation.ended is not None else time.monotonic()
    _REQUESTS.info(
        "request %s %s: %s",
        ctx.id,
        finish,
        code.name,
        extra={
            "engine": generation.engine,
            "request_id": ctx.id,
            "status": code.name,
            "finish": finish,
            "cause": cause.value if cause is not None else None,
            "items": generation.items,
            "messages": generation.messages,
            "duration_ms": round((ended - generation.started) * 1000, 3),
            # Only on a resumed generation: its items continue from there.
            **({"resume_from": ctx.resume_from} if ctx.resume_from else {}),
        },
    )


def log_dequeued(generation: Generation, cause: Cause | None) -> None:
    """The line of a call that waited in its engine's queue, when it leaves it: the time waited, and why it left
    (``admitted``: it got a slot; else the cause that took it out, as in the request line)."""
    left = cause.value if cause is not None else "admitted"
    waited_ms = round((generation.waited or 0.0) * 1000, 3)
    _REQUESTS.info(
        "request %s waited %.1f ms in the queue: %s",
        generation.id,
        waited_ms,
        left,
        extra={
            "engine": generation.engine,
            "request_id": generation.id,
            "priority": generation.priority,
            "queued_ms": waited_ms,
            "left": left,
        },
    )


class RefusalLog:
    """One log line per call refused before its generation started, at most ``per_second`` lines a second.

    A flood of bad calls (a client looping on an unknown engine) must not flood the log: past the rate, refusals
    are only counted, and the next line that is written says how many were left out. The metrics count all.
    """

    def __init__(self, per_second: float = 10.0) -> None:
        self.per_second = per_second
        self._allowance = per_second
        self._last = time.monotonic()
        self._skipped = 0

    def __call__(self, engine: str, error: EngineError) -> None:
        now = time.monotonic()
        self._allowance = min(self.per_second, self._allowance + (now - self._last) * self.per_second)
        self._last = now
        if self._allowance < 1:
            self._skipped += 1
            return
        self._allowance -= 1
        skipped, self._skipped = self._skipped, 0
        _REQUESTS.info(
            "refused: %s: %s",
            error.code.name,
            error.message,
            extra={"engine": engine or None, "status": error.code.name, "finish": "refused", "not_logged": skipped},
        )
