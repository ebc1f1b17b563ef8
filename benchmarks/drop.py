"""A client dropping its own connections: a disconnect without the process's teardown in the measurement.

A SIGKILLed client's connections close only as the kernel tears the process down (2.6 to 2.8 ms on the
benchmark machine), so "SIGKILL to engine noticing" is mostly the kernel's time. Figure (i) therefore also has
the client shut down every TCP connection it has at once (FIN both ways, as a crash's close sends) and times
from just before that: what the server takes to notice a client that went away. Standard library only: the
origin's runtime's client process uses it too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

__all__ = ["drop_connections"]


def drop_connections() -> float:
    """Shut down every TCP connection of this process; ``time.time()`` just before the first."""
    fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    at = time.time()
    for fd in fds:
        try:
            dup = os.dup(fd)
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        try:
            sock = socket.socket(fileno=dup)
        except OSError:
            os.close(dup)  # not a socket
            continue
        with sock:  # closes the duplicate only: the connection is shut down, for every descriptor of it
            if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):  # a listener, or not connected
                    sock.shutdown(socket.SHUT_RDWR)
    return at
