"""`python -m worker.healthcheck`: the worker is healthy while its liveness file is fresh."""

from __future__ import annotations

import os

import pytest

from worker import healthcheck


@pytest.fixture
def liveness_file(tmp_path, monkeypatch):
    path = tmp_path / "celery-worker.liveness"
    monkeypatch.setattr(healthcheck, "LIVENESS_FILE", path)
    return path


def test_no_file_yet_is_unhealthy(liveness_file):
    assert not healthcheck.healthy()
    assert healthcheck.main() == 1


def test_a_fresh_file_is_healthy_and_a_stale_one_is_not(liveness_file):
    liveness_file.touch()
    assert healthcheck.main() == 0
    touched = liveness_file.stat().st_mtime
    assert healthcheck.healthy(now=touched + healthcheck.STALE_AFTER_SECONDS - 1)
    assert not healthcheck.healthy(now=touched + healthcheck.STALE_AFTER_SECONDS + 1)
    os.utime(liveness_file, (touched - 2 * healthcheck.STALE_AFTER_SECONDS,) * 2)
    assert healthcheck.main() == 1


def test_the_scheduler_has_its_own_file(tmp_path, monkeypatch, liveness_file):
    scheduler_file = tmp_path / "celery-beat.liveness"
    monkeypatch.setattr(healthcheck, "SCHEDULER_LIVENESS_FILE", scheduler_file)
    liveness_file.touch()
    assert healthcheck.main(["scheduler"]) == 1
    scheduler_file.touch()
    assert healthcheck.main(["scheduler"]) == 0
