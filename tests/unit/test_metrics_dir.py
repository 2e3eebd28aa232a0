"""core/metrics_dir.py: the multiprocess directory both servers empty at start."""

from __future__ import annotations

from core.metrics_dir import reset_metrics_directory


def test_a_previous_runs_samples_are_removed_and_the_directory_is_kept(tmp_path):
    directory = tmp_path / "metrics"
    (directory / "old").mkdir(parents=True)
    (directory / "counter_12.db").write_bytes(b"samples")
    (directory / "old" / "gauge_7.db").write_bytes(b"samples")
    reset_metrics_directory(str(directory))
    assert directory.is_dir()
    assert list(directory.iterdir()) == []


def test_a_missing_directory_is_created_and_none_does_nothing(tmp_path):
    directory = tmp_path / "a" / "b"
    reset_metrics_directory(str(directory))
    assert directory.is_dir()
    reset_metrics_directory(None)
    reset_metrics_directory("")
