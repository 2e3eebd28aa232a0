"""Worker-count maths: the usable CPUs are the container's quota, never the host's core count."""

from __future__ import annotations

import pytest

from core import cpus


@pytest.fixture
def cgroup_v2(tmp_path):
    def write(value: str):
        (tmp_path / "cpu.max").write_text(value)
        return tmp_path

    return write


def test_v2_quota_rounds_up(cgroup_v2):
    assert cpus.quota_cpus(cgroup_v2("150000 100000\n")) == 1.5


def test_v2_unlimited_is_none(cgroup_v2):
    assert cpus.quota_cpus(cgroup_v2("max 100000\n")) is None


def test_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.quota_cpus(tmp_path) == 2.0


def test_v1_unlimited(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.quota_cpus(tmp_path) is None


def test_no_cgroup_files(tmp_path):
    assert cpus.quota_cpus(tmp_path) is None


@pytest.mark.parametrize(
    ("affinity", "cpu_max", "expected"),
    [
        (64, "200000 100000", 2),  # a 64-core host, a 2-CPU container: 2, not 64
        (64, "150000 100000", 2),  # a fractional quota rounds up
        (3, "800000 100000", 3),  # affinity (--cpuset-cpus) caps a larger quota
        (8, "10000 100000", 1),  # a tiny quota still gets one
        (4, "max 100000", 4),  # no quota: the affinity mask
    ],
)
def test_usable_cpus(cgroup_v2, monkeypatch, affinity, cpu_max, expected):
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: affinity)
    assert cpus.usable_cpus(cgroup_v2(cpu_max)) == expected


def test_garbage_cgroup_file_falls_back_to_affinity(cgroup_v2, monkeypatch):
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 4)
    assert cpus.usable_cpus(cgroup_v2("nonsense")) == 4


def test_affinity_is_this_process_mask():
    import os

    assert cpus.affinity_cpus() == len(os.sched_getaffinity(0))
