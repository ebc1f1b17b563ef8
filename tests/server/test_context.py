"""The context's rules (docs/concepts.md), one test each, on the context alone (stream-facing ones: test_stream)."""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref

import pytest

from engine_runtime.server import Context
from engine_runtime.server.context import MAX_ID_LENGTH, validate_request_id


class Recorder:
    """A linked child that is not a Context: anything with the context's methods may be linked."""

    def __init__(self, name: str, log: list[str], parent: Context | None = None) -> None:
        self.name, self.log, self.parent = name, log, parent

    def _record(self, what: str) -> None:
        # The parent must not have changed yet when its child is told.
        parent_state = None if self.parent is None else (self.parent.is_stopped(), self.parent.is_killed())
        self.log.append(f"{self.name}.{what}:{parent_state}")

    def stop_generating(self) -> None:
        self._record("stop")

    def stop(self) -> None:
        self._record("stop")

    def kill(self) -> None:
        self._record("kill")

    def is_stopped(self) -> bool:
        return False

    def is_killed(self) -> bool:
        return False


def test_id_defaults_to_a_fresh_uuid4() -> None:
    a, b = Context(), Context()
    assert uuid.UUID(a.id).version == 4
    assert a.id != b.id


def test_id_is_kept_and_never_changes() -> None:
    ctx = Context("req-1")
    ctx.stop()
    ctx.kill()
    assert ctx.id == "req-1"


def test_stop_generating_sets_stopped_only_and_is_idempotent() -> None:
    ctx = Context()
    assert not ctx.is_stopped()
    ctx.stop_generating()
    ctx.stop_generating()
    assert ctx.is_stopped() and not ctx.is_killed()


def test_stop_is_an_alias_of_stop_generating() -> None:
    ctx = Context()
    ctx.stop()
    assert ctx.is_stopped() and not ctx.is_killed()


def test_kill_sets_stopped_and_killed_and_is_idempotent() -> None:
    ctx = Context()
    ctx.kill()
    ctx.kill()
    assert ctx.is_stopped() and ctx.is_killed()


def test_killed_is_terminal() -> None:
    ctx = Context()
    ctx.kill()
    ctx.stop()
    ctx.stop_generating()
    assert ctx.is_killed()


@pytest.mark.asyncio
async def test_stopped_resolves_on_stop() -> None:
    ctx = Context()
    waiter = asyncio.ensure_future(ctx.stopped())
    await asyncio.sleep(0)
    assert not waiter.done()
    ctx.stop()
    await asyncio.wait_for(waiter, 1)


@pytest.mark.asyncio
async def test_stopped_resolves_on_kill_too() -> None:
    ctx = Context()
    waiter = asyncio.ensure_future(ctx.stopped())
    await asyncio.sleep(0)
    ctx.kill()
    await asyncio.wait_for(waiter, 1)


@pytest.mark.asyncio
async def test_killed_resolves_on_kill_and_not_on_stop() -> None:
    ctx = Context()
    waiter = asyncio.ensure_future(ctx.killed())
    ctx.stop()
    await asyncio.sleep(0.01)
    assert not waiter.done()
    ctx.kill()
    await asyncio.wait_for(waiter, 1)


@pytest.mark.asyncio
async def test_waits_return_at_once_when_already_there() -> None:
    ctx = Context()
    ctx.kill()
    await asyncio.wait_for(ctx.stopped(), 0.1)
    await asyncio.wait_for(ctx.killed(), 0.1)


@pytest.mark.asyncio
async def test_waits_never_resolve_for_a_finished_generation() -> None:
    ctx = Context()
    waiter = asyncio.ensure_future(ctx.stopped())
    ctx.mark_done()
    await asyncio.sleep(0.01)
    assert not waiter.done()
    waiter.cancel()


def test_link_child_tells_children_in_link_order_before_the_parent_changes() -> None:
    log: list[str] = []
    parent = Context()
    parent.link_child(Recorder("a", log, parent))
    parent.link_child(Recorder("b", log, parent))
    parent.stop()
    parent.kill()
    assert log == [
        "a.stop:(False, False)",
        "b.stop:(False, False)",
        "a.kill:(True, False)",
        "b.kill:(True, False)",
    ]


def test_link_child_propagates_to_context_children() -> None:
    parent, child = Context(), Context()
    parent.link_child(child)
    parent.stop_generating()
    assert child.is_stopped() and not child.is_killed()
    parent.kill()
    assert child.is_killed()


def test_a_child_never_changes_its_parent() -> None:
    parent = Context()
    child = parent.child()
    child.kill()
    assert not parent.is_stopped()


def test_linking_to_a_stopped_parent_stops_the_child_at_once() -> None:
    log: list[str] = []
    parent = Context()
    parent.stop()
    parent.link_child(Recorder("a", log))
    assert log == ["a.stop:None"]


def test_linking_to_a_killed_parent_kills_the_child_at_once() -> None:
    parent, child = Context(), Context()
    parent.kill()
    parent.link_child(child)
    assert child.is_killed()


def test_unlink_detaches_the_child() -> None:
    parent, child = Context(), Context()
    link = parent.link_child(child)
    link.unlink()
    link.unlink()
    parent.kill()
    assert not child.is_stopped()


def test_child_is_linked_and_has_its_own_derived_id() -> None:
    parent = Context("parent")
    first, second = parent.child(), parent.child()
    assert first.id.startswith("parent") and first.id != second.id != parent.id
    parent.stop()
    assert first.is_stopped() and second.is_stopped()


def test_child_ids_stay_valid_request_ids_however_deep() -> None:
    ctx = Context("x" * MAX_ID_LENGTH)
    seen = set()
    for _ in range(50):
        ctx = ctx.child()
        assert validate_request_id(ctx.id) is None
        assert ctx.id not in seen
        seen.add(ctx.id)


def test_linking_a_context_to_itself_is_refused() -> None:
    ctx = Context()
    with pytest.raises(ValueError, match="cycle"):
        ctx.link_child(ctx)


def test_a_cycle_through_descendants_is_refused() -> None:
    root = Context()
    grandchild = root.child().child()
    with pytest.raises(ValueError, match="cycle"):
        grandchild.link_child(root)


def test_a_finished_child_is_released() -> None:
    parent = Context()
    child = parent.child()
    ref = weakref.ref(child)
    child.mark_done()
    del child
    gc.collect()
    assert ref() is None


def test_a_long_lived_parent_does_not_grow_with_short_children() -> None:
    parent = Context()
    refs = []
    for _ in range(1000):
        child = parent.child()
        refs.append(weakref.ref(child))
        child.mark_done()
    del child
    gc.collect()
    assert all(ref() is None for ref in refs)
    parent.kill()  # nothing left to tell, and nothing raises


def test_request_id_validation_names_the_problem() -> None:
    assert validate_request_id("ok-id_1.2") is None
    assert "empty" in (validate_request_id("") or "")
    assert "129" in (validate_request_id("a" * 129) or "")
    assert "printable" in (validate_request_id("bad\nid") or "")
