"""How many CPUs this process may really use.

`os.cpu_count()` reports the host's cores, not what the container is allowed: on a 64-core server a
container limited to 2 CPUs would start 64 workers and exhaust the database's connections. The
usable count is the smallest of the CPU affinity mask and the cgroup CPU quota, rounded up.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def quota_cpus(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The cgroup CPU quota in CPUs (v2 `cpu.max`, else v1 `cfs_quota_us`), or None if unlimited."""
    v2 = cgroup_root / "cpu.max"
    if v2.is_file():
        quota, _, period = v2.read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or 100_000)
    v1_quota = cgroup_root / "cpu" / "cpu.cfs_quota_us"
    v1_period = cgroup_root / "cpu" / "cpu.cfs_period_us"
    if v1_quota.is_file() and v1_period.is_file():
        quota_us = int(v1_quota.read_text())
        if quota_us <= 0:
            return None
        return quota_us / int(v1_period.read_text())
    return None


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (`--cpuset-cpus`), or the host's count where unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """At least 1; a fractional quota rounds up (1.5 CPUs are served best by 2 processes)."""
    cpus = affinity_cpus()
    try:
        quota = quota_cpus(cgroup_root)
    except (OSError, ValueError):
        quota = None
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
