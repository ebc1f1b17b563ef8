"""The control a remote stream links under its context: the context's stop and kill, turned into the call's.

``stop_generating()`` sends the in-band stop (``ACTION_STOP_GENERATING``) on the generation's own ``Session``
call, so it reaches the replica serving it whatever balancer sits in between; ``kill()`` cancels the call. Both
are remembered, so that a call that replaces this one (a migration, :mod:`.migration`) gets them too.

Example::

    control = CallControl(call)
    context.link_child(control)      # context.stop_generating() now sends the stop on `call`
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from engine_runtime.generated.engine.v1 import engine_pb2 as pb

if TYPE_CHECKING:
    from .transport import SessionCall

__all__ = ["CallControl"]

_STOP = pb.SessionRequest(control=pb.Control(action=pb.Control.ACTION_STOP_GENERATING)).SerializeToString()


class CallControl:
    """Linked under the stream's context: stop is the in-band control message, kill cancels the call.

    Both are remembered, so that a call that replaces this one (a migration) gets them too.
    """

    __slots__ = ("call", "killed", "stop_asked", "writes")

    def __init__(self, call: SessionCall) -> None:
        self.call = call
        self.stop_asked = False
        self.killed = False
        self.writes: set[asyncio.Task[None]] = set()

    def stop_generating(self) -> None:
        if self.stop_asked:
            return
        self.stop_asked = True
        self._send_stop()

    stop = stop_generating

    def kill(self) -> None:
        self.killed = True
        self.call.cancel()

    def is_stopped(self) -> bool:
        return self.stop_asked or self.killed

    def is_killed(self) -> bool:
        return self.killed

    def switch(self, call: SessionCall) -> None:
        """The generation continues on ``call`` (its ``start`` sent): a stop asked before goes on it too."""
        self.call = call
        if self.killed:
            call.cancel()
        elif self.stop_asked:
            self._send_stop()

    def _send_stop(self) -> None:
        if not self.call.done():
            task = asyncio.get_running_loop().create_task(self.call.try_write(_STOP))
            self.writes.add(task)
            task.add_done_callback(self.writes.discard)
