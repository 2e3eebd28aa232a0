"""Startup's objects frozen out of the collector's sight; what comes later stays in it."""

from __future__ import annotations

import gc

from core.startup_gc import freeze_startup_objects


class _Node:
    def __init__(self) -> None:
        self.itself = self  # a cycle: only the cyclic collector could free it


def _walked(o: object) -> bool:
    return any(o is x for g in range(3) for x in gc.get_objects(g))


def test_startup_objects_are_frozen_and_later_ones_are_not():
    made_at_startup = _Node()
    before = gc.get_freeze_count()
    freeze_startup_objects()
    try:
        assert gc.get_freeze_count() > before
        assert not _walked(made_at_startup)
        made_later = _Node()
        assert _walked(made_later)
    finally:
        gc.unfreeze()  # this test process's own objects, back where they were
