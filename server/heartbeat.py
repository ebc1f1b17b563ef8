"""Worker heartbeats: when the ``--workers`` supervisor pings its workers, and which ones stopped answering.

A worker that dies is noticed by its process sentinel; one that is alive but stuck (SIGSTOP, an endless loop
that never returns to its event loop) is not, and the kernel keeps handing it new connections. The supervisor
pings every serving worker over its pipe each third of ``--worker-heartbeat-timeout``; the worker answers from
its event loop, so an answer means it serves. A worker silent for the whole timeout is replaced.

Example::

    beats = Heartbeats(timeout=10)
    beats.answered(0, now)          # worker 0 is serving (or answered a ping)
    if beats.due(now): ...          # ping every worker
    for index in beats.overdue(now): ...   # replace these
"""

from __future__ import annotations

__all__ = ["Heartbeats"]


class Heartbeats:
    """The last answer of each serving worker, and the next ping's time."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.interval = timeout / 3
        self._answered: dict[int, float] = {}
        self._next_ping = 0.0

    def answered(self, index: int, now: float) -> None:
        """Worker ``index`` serves: it just became ready, or answered a ping."""
        self._answered[index] = now

    def forget(self, index: int) -> None:
        self._answered.pop(index, None)

    def due(self, now: float) -> bool:
        """Whether it is time to ping the workers (then the next ping is scheduled)."""
        if now < self._next_ping:
            return False
        self._next_ping = now + self.interval
        return True

    def overdue(self, now: float) -> list[int]:
        """The workers that have not answered for the whole timeout."""
        return [index for index, last in self._answered.items() if now - last > self.timeout]

    def wait(self, now: float) -> float:
        """Seconds until the next ping."""
        return max(0.0, self._next_ping - now)
