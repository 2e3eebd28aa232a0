"""The load generator: wrk on this host, and what the host's CPU did besides wrk over a run.

The host's busy time comes from /proc/stat, read right before wrk starts and right after it
exits; wrk's own (utime + stime) from its /proc/<pid>/stat, read once it has exited and before
it is reaped (a zombie keeps its counters). Importing this module starts nothing.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import figures
from bench.config import CONNECTIONS, SECONDS
from bench.figures import Wrk
from tests.support import ROOT
from tests.support.stack import CommandFailed

PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class Loaded:
    """One wrk run and the CPU beside it."""

    wrk: Wrk
    # The whole host's CPU over the run less wrk's own, and wrk's own, microseconds. None where
    # this host has no /proc (the engine and wrk then run elsewhere than /proc says).
    cpu_usec: int | None
    wrk_cpu_usec: int | None


def host_busy() -> int | None:
    """The whole host's busy CPU time so far, clock ticks; None where there is no /proc/stat."""
    try:
        return figures.host_busy_ticks(PROC_STAT.read_text())
    except OSError:
        return None


def _exited(proc: subprocess.Popen[str], timeout: float) -> None:
    """Wait until proc has exited, leaving it unreaped, so its /proc/<pid>/stat still holds its
    CPU; polled (waitid has no timeout), at a cost too small to show in the host's counter."""
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.05)


def run_wrk(
    url: str,
    *,
    script: str | None = None,
    headers: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    seconds: int = SECONDS,
    during: Callable[[], None] | None = None,
) -> Loaded:
    """wrk against url, with the host's CPU beside it; `during` is called once while the load
    runs (about a second in)."""
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    if script:
        args += ["-s", str(ROOT / "bench" / "wrk" / script)]
    args.append(url)
    # Files, not pipes: wrk is left unreaped until its counters are read, and a full pipe would
    # keep it from exiting.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        host_before = host_busy()
        with subprocess.Popen(
            args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=out, stderr=err, text=True
        ) as proc:
            try:
                if during is not None:
                    time.sleep(min(1.0, seconds / 2))
                    during()
                _exited(proc, timeout=seconds + 60)
                stat = Path(f"/proc/{proc.pid}/stat")
                wrk_ticks = figures.process_cpu_ticks(stat.read_text()) if stat.exists() else None
                host_after = host_busy()
                proc.wait()
            except BaseException:
                proc.kill()
                raise
        out.seek(0)
        err.seek(0)
        report, errors = out.read(), err.read()
    if proc.returncode != 0:
        raise CommandFailed(f"{shlex.join(args)} exited {proc.returncode}\n{report}\n{errors}")
    measured = figures.parse_wrk(report)
    if host_before is None or host_after is None or wrk_ticks is None:
        return Loaded(measured, None, None)
    hz = os.sysconf("SC_CLK_TCK")
    return Loaded(
        measured,
        figures.cpu_beside_load(host_before, host_after, wrk_ticks, hz),
        figures.usec(wrk_ticks, hz),
    )


def wrk(
    url: str,
    *,
    script: str | None = None,
    headers: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    seconds: int = SECONDS,
) -> Wrk:
    """wrk against url: its figures only."""
    return run_wrk(url, script=script, headers=headers, env=env, seconds=seconds).wrk
