"""The context of one generation: its id, graceful stop, kill, and linked children.

A port of the origin runtime's ``AsyncEngineContext``. The state only moves forward::

    running --stop_generating()--> stopped --kill()--> killed
       \\_________________________kill()_______________/

``stop`` asks the engine to finish on its own terms; ``kill`` ends it now. Linked children are told first, in
link order, and only then does the parent change, so a kill travels down a tree of contexts (and across a
process boundary when a child is a remote stream's context) before anyone observes the parent as killed.

Example::

    ctx = Context()
    inner = ctx.child()          # e.g. the context of a nested engine call
    ctx.kill()
    assert inner.is_killed() and ctx.is_killed()
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Protocol, runtime_checkable

from .ids import request_id

__all__ = ["MAX_ID_LENGTH", "Context", "Controller", "Link", "validate_request_id"]

MAX_ID_LENGTH = 128

_RUNNING, _STOPPED, _KILLED = 0, 1, 2


@runtime_checkable
class Controller(Protocol):
    """What a linked child must offer: the context's control methods.

    A :class:`Context` is one; so is a remote stream's context, whose ``kill()`` cancels the call.
    """

    def stop_generating(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...
    def is_stopped(self) -> bool: ...
    def is_killed(self) -> bool: ...


def validate_request_id(request_id: str) -> str | None:
    """Return why ``request_id`` is not a valid id, or ``None`` when it is.

    Ids travel as the ``x-request-id`` metadata value, so they must be printable ASCII (no control
    characters) and at most :data:`MAX_ID_LENGTH` characters.
    """
    if not request_id:
        return "request id is empty"
    if len(request_id) > MAX_ID_LENGTH:
        return f"request id is {len(request_id)} characters long, over the limit of {MAX_ID_LENGTH}"
    if not request_id.isascii() or not request_id.isprintable():
        return f"request id {request_id[:MAX_ID_LENGTH]!r} has characters other than printable ASCII"
    return None


class Link:
    """The handle :meth:`Context.link_child` returns; :meth:`unlink` detaches the child."""

    __slots__ = ("child", "parent")

    def __init__(self, parent: Context, child: Controller) -> None:
        self.parent: Context | None = parent
        self.child = child

    def unlink(self) -> None:
        """Detach the child: the parent's later stop or kill no longer reaches it. Idempotent."""
        parent, self.parent = self.parent, None
        if parent is not None:
            parent._forget(self)
        if isinstance(self.child, Context):
            self.child._as_child.discard(self)


class Context:
    """The control handle of one generation, shared by the engine and whoever consumes its stream.

    Example::

        ctx = Context("req-1")
        ctx.stop_generating()          # the engine sees ctx.is_stopped() and returns when it likes
        await ctx.stopped()            # returns at once: already stopped
        Context("req-1", resume_from=5).resume_from   # 5: the consumer has the first five items
    """

    __slots__ = (
        "__weakref__",
        "_as_child",
        "_child_count",
        "_children",
        "_done",
        "_id",
        "_killed_ev",
        "_state",
        "_stopped_ev",
        "resume_from",
    )

    def __init__(self, id: str | None = None, *, resume_from: int = 0) -> None:
        if resume_from < 0:
            raise ValueError(f"resume_from must be 0 or more, got {resume_from}")
        self._id = id if id is not None else request_id()
        self.resume_from = resume_from
        """How many items of this generation its consumer already has: a resumable engine continues after them.

        0 for a fresh start. The runtime sets it from ``GenerateRequest.resume_from``; only an engine registered
        with ``resumable=True`` is ever started with anything else (docs/scaling.md).
        """
        self._state = _RUNNING
        self._done = False
        # Links are kept in a dict (insertion-ordered) so that unlinking a finished child is O(1).
        self._children: dict[Link, None] = {}
        self._as_child: set[Link] = set()
        self._child_count = 0
        # Events are made on first wait: most contexts are never awaited, and this is the per-request path.
        self._stopped_ev: asyncio.Event | None = None
        self._killed_ev: asyncio.Event | None = None

    def __repr__(self) -> str:
        state = ("running", "stopped", "killed")[self._state]
        return f"Context(id={self._id!r}, state={state}{', done' if self._done else ''})"

    @property
    def id(self) -> str:
        """The id of the generation; the same for the context's whole life and on both sides of the wire."""
        return self._id

    # -- state -----------------------------------------------------------------------------------------------

    def is_stopped(self) -> bool:
        """True once a stop or a kill was asked for."""
        # Engines call this once per item: a literal compare is measurably cheaper than a global lookup.
        return self._state > 0

    def is_killed(self) -> bool:
        """True once a kill was asked for. Killed is terminal."""
        return self._state == _KILLED

    def is_done(self) -> bool:
        """True once the generation bound to this context has ended, however it ended."""
        return self._done

    async def stopped(self) -> None:
        """Wait until the context is stopped (a kill counts). Never returns for a stream that just completed."""
        if self._state >= _STOPPED:
            return
        if self._stopped_ev is None:
            self._stopped_ev = asyncio.Event()
        await self._stopped_ev.wait()

    async def killed(self) -> None:
        """Wait until the context is killed. Never returns for a stream that completed or was only stopped."""
        if self._state == _KILLED:
            return
        if self._killed_ev is None:
            self._killed_ev = asyncio.Event()
        await self._killed_ev.wait()

    # -- control ---------------------------------------------------------------------------------------------

    def stop_generating(self) -> None:
        """Ask the engine to finish. Items already produced stay valid and keep flowing. Idempotent."""
        for link in list(self._children):
            link.child.stop_generating()
        if self._state == _RUNNING:
            self._state = _STOPPED
            if self._stopped_ev is not None:
                self._stopped_ev.set()

    def stop(self) -> None:
        """Same as :meth:`stop_generating`."""
        self.stop_generating()

    def kill(self) -> None:
        """Stop and terminate now: nothing more is delivered and the engine is cancelled. Idempotent."""
        for link in list(self._children):
            link.child.kill()
        if self._state != _KILLED:
            self._state = _KILLED
            if self._stopped_ev is not None:
                self._stopped_ev.set()
            if self._killed_ev is not None:
                self._killed_ev.set()

    # -- links -----------------------------------------------------------------------------------------------

    def link_child(self, child: Controller) -> Link:
        """Link ``child`` so that this context's stop and kill reach it first.

        A child linked to a context that is already stopped or killed is stopped or killed at once. Linking a
        context to itself or to one of its ancestors raises ``ValueError`` (it would be a cycle).

        Example::

            link = ctx.link_child(other_ctx)
            ...
            link.unlink()
        """
        if isinstance(child, Context) and child._reaches(self):
            raise ValueError(f"linking context {child.id!r} under {self.id!r} would make a cycle")
        link = Link(self, child)
        if isinstance(child, Context):
            if child._done:
                # A finished child has nothing left to tell; keep no reference to it.
                link.parent = None
                return link
            child._as_child.add(link)
        if not self._done:
            self._children[link] = None
        else:
            link.parent = None
        if self._state == _KILLED:
            child.kill()
        elif self._state == _STOPPED:
            child.stop_generating()
        return link

    def child(self) -> Context:
        """A new context linked as a child, with an id derived from this one (and at most 128 characters)."""
        self._child_count += 1
        suffix = f".{self._child_count}"
        base = self._id
        if len(base) + len(suffix) > MAX_ID_LENGTH:
            digest = hashlib.blake2b(base.encode(), digest_size=8).hexdigest()
            base = f"{base[: MAX_ID_LENGTH - len(suffix) - len(digest) - 1]}~{digest}"
        ctx = Context(base + suffix)
        self.link_child(ctx)
        return ctx

    def mark_done(self) -> None:
        """Record that the generation ended; the runtime calls it when a stream finishes.

        A finished context leaves its parents (so a long-lived parent does not grow with every short child)
        and lets go of its own children. ``stopped()``/``killed()`` waiters are not woken: nothing was stopped.
        """
        if self._done:
            return
        self._done = True
        for link in list(self._as_child):
            link.unlink()
        for link in list(self._children):
            link.parent = None
        self._children.clear()

    def _forget(self, link: Link) -> None:
        self._children.pop(link, None)

    def _reaches(self, target: Context) -> bool:
        """Whether ``target`` is this context or one of its linked descendants."""
        seen: set[int] = set()
        pending: list[Context] = [self]
        while pending:
            node = pending.pop()
            if node is target:
                return True
            if id(node) in seen:
                continue
            seen.add(id(node))
            pending.extend(link.child for link in node._children if isinstance(link.child, Context))
        return False
