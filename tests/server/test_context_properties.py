"""Property tests: random trees of linked contexts under random stop/kill/link/unlink sequences."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine_runtime.server import Context
from engine_runtime.server.context import Link

Op = tuple[str, int, int]
ops = st.lists(
    st.tuples(
        st.sampled_from(["stop", "kill", "link", "unlink", "child", "done"]),
        st.integers(0, 15),
        st.integers(0, 15),
    ),
    max_size=60,
)


class Watcher:
    """A child that checks, when told, that its parent has not changed yet."""

    def __init__(self, parent: Context, violations: list[str]) -> None:
        self.parent, self.violations = parent, violations
        self.snapshot = (False, False)
        self.told = False

    def _told(self) -> None:
        # The first telling of an operation must come before the parent changes; later ones (a child linked
        # twice, say) are repeated, idempotent calls.
        if not self.told and (self.parent.is_stopped(), self.parent.is_killed()) != self.snapshot:
            self.violations.append(f"{self.parent!r} changed before its child was told")
        self.told = True

    def stop_generating(self) -> None:
        self._told()

    def stop(self) -> None:
        self._told()

    def kill(self) -> None:
        self._told()

    def is_stopped(self) -> bool:
        return False

    def is_killed(self) -> bool:
        return False


@settings(max_examples=300, deadline=None)
@given(ops)
def test_random_trees_never_regress_and_tell_children_first(sequence: list[Op]) -> None:
    contexts = [Context() for _ in range(4)]
    links: list[Link] = []
    violations: list[str] = []
    watchers = [Watcher(ctx, violations) for ctx in contexts]
    for watcher in watchers:
        watcher.parent.link_child(watcher)
    for op, a, b in sequence:
        for watcher in watchers:
            watcher.snapshot = (watcher.parent.is_stopped(), watcher.parent.is_killed())
            watcher.told = False
        ca, cb = contexts[a % len(contexts)], contexts[b % len(contexts)]
        before = [(c.is_stopped(), c.is_killed()) for c in contexts]
        if op == "stop":
            ca.stop_generating()
        elif op == "kill":
            ca.kill()
        elif op == "child":
            contexts.append(ca.child())
        elif op == "done":
            ca.mark_done()
        elif op == "unlink" and links:
            links[a % len(links)].unlink()
        elif op == "link":
            try:
                links.append(ca.link_child(cb))
            except ValueError as error:
                assert "cycle" in str(error)
        after = [(c.is_stopped(), c.is_killed()) for c in contexts[: len(before)]]
        for (s0, k0), (s1, k1) in zip(before, after, strict=True):
            assert s1 >= s0 and k1 >= k0, "a state regressed"
            assert not k1 or s1, "killed but not stopped"
    assert violations == []


@settings(max_examples=200, deadline=None)
@given(ops)
def test_a_kill_reaches_every_linked_descendant(sequence: list[Op]) -> None:
    root = Context()
    nodes = [root]
    for op, a, _ in sequence:
        parent = nodes[a % len(nodes)]
        if op in ("child", "link"):
            nodes.append(parent.child())
    root.kill()
    assert all(node.is_killed() for node in nodes)
