"""The benchmark's pure logic, without Docker or wrk: parsing wrk's output, a container's CPU
counter (cgroup v2 cpu.stat, or v1 cpuacct.usage), the host's CPU beside the load generator's
(/proc/stat, /proc/<pid>/stat), counting a container's processes, and the statistics over rounds
(median, spread, ratios with their spread, the noise rule, goals).

Kept apart from the modules that drive Docker and wrk so the unit tests
(tests/unit/test_bench_figures.py) check exactly the code the benchmark runs. Importing this
module starts nothing.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# ---------------------------------------------------------------- wrk -------------------------
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


class WrkOutputError(ValueError):
    """wrk's output lacks a figure the benchmark needs (wrk failed, or its format changed)."""


def ms(text: str) -> float:
    """wrk's latency ("812.00us", "1.23ms", "2.01s") in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise WrkOutputError(f"not a wrk latency: {text!r}")
    number, unit = match.groups()
    return round(float(number) * _UNITS[unit], 3)


@dataclass(frozen=True)
class Wrk:
    """One wrk run. Socket errors are wrk's own counts; non_2xx is wrk's "Non-2xx or 3xx
    responses" (wrk counts statuses of 400 and above)."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int = 0
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    non_2xx: int = 0

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def errors(self) -> int:
        """Every request that did not get a 2xx/3xx answer, as far as wrk can tell."""
        return self.socket_errors + self.non_2xx


def parse_wrk(out: str) -> Wrk:
    """wrk's report (run with --latency) as a Wrk."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, flags=re.M)
    total = re.search(r"^\s*(\d+) requests in ", out, flags=re.M)
    latency = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)\s*$", out, flags=re.M))
    if not rps or not total or not {"50", "99"} <= latency.keys():
        raise WrkOutputError(f"wrk's report lacks requests, req/s or --latency:\n{out[-2000:]}")
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    connect, read, write, timeout = (int(n) for n in sockets.groups()) if sockets else (0,) * 4
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Wrk(
        rps=round(float(rps.group(1)), 1),
        p50_ms=ms(latency["50"]),
        p99_ms=ms(latency["99"]),
        requests=int(total.group(1)),
        connect_errors=connect,
        read_errors=read,
        write_errors=write,
        timeouts=timeout,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


# ---------------------------------------------------------------- cgroup CPU ------------------
def parse_cpu_stat(text: str) -> int:
    """cgroup v2 cpu.stat: usage_usec, microseconds of CPU used by every process of the group."""
    match = re.search(r"^usage_usec (\d+)$", text, flags=re.M)
    if not match:
        raise ValueError(f"no usage_usec in cpu.stat: {text[:200]!r}")
    return int(match.group(1))


def parse_cpuacct_usage(text: str) -> int:
    """cgroup v1 cpuacct.usage (nanoseconds) in microseconds."""
    return int(text.strip()) // 1000


def cpu_counter_files(proc_cgroup: str, root: Path = Path("/sys/fs/cgroup")) -> list[Path]:
    """Where a process's CPU counter may be, from its /proc/<pid>/cgroup, best first: the cgroup
    v2 cpu.stat (unified host, or the `unified` mount of a hybrid host: v2 counts usage_usec even
    with no controller enabled), then v1's cpuacct.usage (its own mount, or cpu,cpuacct)."""
    v2: list[Path] = []
    v1: list[Path] = []
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        relative = path.lstrip("/")
        if controllers == "":
            v2 += [root / relative / "cpu.stat", root / "unified" / relative / "cpu.stat"]
        elif "cpuacct" in controllers.split(","):
            v1 += [
                root / mount / relative / "cpuacct.usage"
                for mount in ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")
            ]
    return v2 + v1


def read_cpu_counter(files: Sequence[Path]) -> int | None:
    """Microseconds from the first counter file that exists; None if none does (the engine runs
    elsewhere, as on Docker Desktop: then there is no CPU column)."""
    for file in files:
        try:
            text = file.read_text()
        except OSError:
            continue
        return parse_cpu_stat(text) if file.name == "cpu.stat" else parse_cpuacct_usage(text)
    return None


def count_processes(docker_top: str) -> int:
    """Processes in `docker top <container>`'s output: every line after the header."""
    return max(0, len([line for line in docker_top.splitlines() if line.strip()]) - 1)


# ---------------------------------------------------------------- host CPU --------------------
def host_busy_ticks(proc_stat: str) -> int:
    """The whole host's busy CPU time in clock ticks, from /proc/stat's first line: user, nice,
    system, irq and softirq. Not idle or iowait (waiting), not steal (another guest ran), not
    guest and guest_nice (already inside user and nice)."""
    fields = proc_stat.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu" or len(fields) < 8:
        raise ValueError(f"not /proc/stat's cpu line: {proc_stat[:200]!r}")
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return user + nice + system + irq + softirq


def process_cpu_ticks(pid_stat: str) -> int:
    """A process's CPU time in clock ticks, from /proc/<pid>/stat: utime + stime (fields 14 and
    15), counted after the command name's closing parenthesis (a name may hold spaces)."""
    fields = pid_stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_beside_load(
    host_before: int, host_after: int, load_generator: int, ticks_per_second: int
) -> int:
    """Microseconds of CPU the host spent over a run besides the load generator's own: the host's
    busy ticks between two readings, less the generator's, whose whole life lies between them."""
    if host_after < host_before:
        raise ValueError(f"the host's counter went backwards: {host_before} -> {host_after}")
    return usec(host_after - host_before - load_generator, ticks_per_second)


def usec(ticks: int, ticks_per_second: int) -> int:
    """Clock ticks (USER_HZ, os.sysconf("SC_CLK_TCK")) in microseconds."""
    return ticks * 1_000_000 // ticks_per_second


# ---------------------------------------------------------------- rounds ----------------------
@dataclass(frozen=True)
class Spread:
    """The median of a figure over the rounds, and its range."""

    median: float
    low: float
    high: float
    n: int

    @property
    def relative(self) -> float:
        """(high - low) / median: how far apart the rounds were."""
        return (self.high - self.low) / self.median if self.median else 0.0

    def show(self, digits: int = 1) -> str:
        if self.n < 2:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}..{self.high:.{digits}f})"


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("no rounds")
    return Spread(
        median=float(statistics.median(values)),
        low=float(min(values)),
        high=float(max(values)),
        n=len(values),
    )


@dataclass(frozen=True)
class Ratio:
    """A over B: the ratio of the medians over the rounds, and the range of the per-round ratios
    (A and B measured next to each other in each round)."""

    of_medians: float
    per_round: tuple[float, ...]

    @property
    def low(self) -> float:
        return min(self.per_round)

    @property
    def high(self) -> float:
        return max(self.per_round)

    def within_noise_of(self, value: float = 1.0) -> bool:
        """The noise rule: a ratio is indistinguishable from `value` when the per-round ratios
        fall on both sides of it (or on it). One round gives no range: never call it clear."""
        return len(self.per_round) < 2 or self.low <= value <= self.high

    def show(self) -> str:
        if len(self.per_round) < 2:
            return f"{self.of_medians:.2f} (one round)"
        return f"{self.of_medians:.2f} ({self.low:.2f}..{self.high:.2f})"


def ratio(a: Sequence[float], b: Sequence[float]) -> Ratio:
    """a[i] and b[i] are one round's figures for the two rows."""
    if len(a) != len(b) or not a:
        raise ValueError(f"rounds do not pair up: {len(a)} vs {len(b)}")
    if any(x <= 0 for x in b):
        raise ValueError("a baseline round measured nothing")
    return Ratio(
        of_medians=round(statistics.median(a) / statistics.median(b), 2),
        per_round=tuple(round(x / y, 2) for x, y in zip(a, b, strict=True)),
    )


def goal_verdict(r: Ratio, goal: float) -> str:
    """Met or not, from the ratio of the medians; qualified when the rounds disagree (the
    per-round ratios fall on both sides of the goal)."""
    met = r.of_medians >= goal
    word = "met" if met else "NOT MET"
    if len(r.per_round) < 2:
        return f"{word} (one round: no spread, no verdict on the noise)"
    if r.within_noise_of(goal):
        return f"{word} (inside the noise: rounds {r.low:.2f}..{r.high:.2f})"
    return word


def difference_verdict(r: Ratio) -> str:
    """Whether A and B differ at all, by the noise rule."""
    if len(r.per_round) < 2:
        return "one round: no spread"
    if r.within_noise_of(1.0):
        return "inside the noise"
    return "faster" if r.of_medians > 1 else "slower"
