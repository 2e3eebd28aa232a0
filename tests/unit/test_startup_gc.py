"""Startup's objects frozen out of the collector's sight, its garbage freed first."""

from __future__ import annotations

import gc
import weakref

from core.startup_gc import freeze_startup_objects


class _Node:
    def __init__(self) -> None:
        self.itself = self  # a cycle: only the cyclic collector frees it


def test_startup_garbage_is_freed_and_the_rest_frozen():
    garbage = _Node()
    gone = weakref.ref(garbage)
    kept = _Node()
    del garbage
    before = gc.get_freeze_count()
    freeze_startup_objects()
    try:
        assert gone() is None
        assert gc.get_freeze_count() > before
        # Frozen: in no generation the collector walks.
        assert not any(kept is o for g in range(3) for o in gc.get_objects(g))
    finally:
        gc.unfreeze()
