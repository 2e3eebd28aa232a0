"""A run's results: each request row over its rounds, the comparisons between rows, the kit's
failures, and the layout of bench.json. Pure: no Docker, no wrk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench import figures
from bench.config import COMPARISONS, Comparison
from bench.figures import Ratio, Spread, Wrk
from bench.phases.operations import Images, Startup
from bench.phases.requests import Sample
from bench.phases.scaling import Scaling
from bench.phases.tracing import TracingCost
from bench.phases.tuning import Tuning
from bench.record import Machine, RunInfo


@dataclass(frozen=True)
class Row:
    system: str
    kit: bool
    samples: list[Sample]

    def spread(self, figure: Callable[[Sample], float | None]) -> Spread | None:
        values = [figure(s) for s in self.samples]
        if not values or any(v is None for v in values):
            return None
        return figures.spread([float(v) for v in values if v is not None])

    @property
    def rps(self) -> Spread:
        spread = self.spread(lambda s: s.wrk.rps)
        assert spread is not None
        return spread

    @property
    def cpu(self) -> Spread | None:
        return self.spread(lambda s: s.cpu_us_per_request)

    def total(self, figure: Callable[[Wrk], int]) -> int:
        return sum(figure(s.wrk) for s in self.samples)

    @property
    def socket_errors(self) -> dict[str, int]:
        return {
            "connect": self.total(lambda w: w.connect_errors),
            "read": self.total(lambda w: w.read_errors),
            "write": self.total(lambda w: w.write_errors),
            "timeout": self.total(lambda w: w.timeouts),
        }

    @property
    def failed_requests(self) -> int:
        return self.total(lambda w: w.errors)

    @property
    def empty_rounds(self) -> list[int]:
        return [s.round for s in self.samples if not s.wrk.requests]

    @property
    def db_connections_opened(self) -> str:
        opened = [s.db_connections_opened for s in self.samples]
        return "-" if any(o is None for o in opened) else str(sum(o or 0 for o in opened))

    @property
    def processes(self) -> str:
        seen = sorted({s.processes for s in self.samples if s.processes is not None})
        return "/".join(map(str, seen)) or "-"


@dataclass(frozen=True)
class Compared:
    comparison: Comparison
    rps: Ratio
    cpu: Ratio | None  # CPU per request, row over baseline


@dataclass(frozen=True)
class Results:
    info: RunInfo
    machine: Machine
    rows: dict[str, Row]
    idle_cpu_ms_per_second: dict[str, float | None]  # by system, before the rounds
    idle_cpu_ms_per_second_by_container: dict[str, float | None]
    tuning: Tuning | None
    scaling: Scaling | None
    startup: Startup | None
    images: Images | None
    rebuild_seconds: float | None
    duration_seconds: int
    idle_host_cpu_ms_per_second: float | None = None  # the whole host's, before the rounds
    tracing: TracingCost | None = None

    @property
    def compared(self) -> list[Compared]:
        out = []
        for c in COMPARISONS:
            if c.row not in self.rows or c.baseline not in self.rows:
                continue
            a, b = self.rows[c.row], self.rows[c.baseline]
            if b.empty_rounds:
                continue  # nothing to divide by (baseline_problems says so)
            cpu_a = [s.cpu_us_per_request for s in a.samples]
            cpu_b = [s.cpu_us_per_request for s in b.samples]
            cpu = None
            if all(x is not None and x > 0 for x in [*cpu_a, *cpu_b]):
                cpu = figures.ratio([float(x) for x in cpu_a if x], [float(x) for x in cpu_b if x])
            rps = figures.ratio([s.wrk.rps for s in a.samples], [s.wrk.rps for s in b.samples])
            out.append(Compared(c, rps, cpu))
        return out

    @property
    def kit_failures(self) -> list[str]:
        """Kit rows with requests that failed, or a round in which none completed (wrk does not
        count a request still waiting when the row ends): the kit must have none."""
        failures = [
            f"{name}: {row.failed_requests} failed requests (socket errors {row.socket_errors}, "
            f"non-2xx {row.total(lambda w: w.non_2xx)})"
            for name, row in self.rows.items()
            if row.kit and row.failed_requests
        ]
        failures += [
            f"{name}: no request completed in round(s) {row.empty_rounds}"
            for name, row in self.rows.items()
            if row.kit and row.empty_rounds
        ]
        return failures

    @property
    def baseline_problems(self) -> list[str]:
        """Baseline rows with a round that completed nothing: their comparisons are left out."""
        return [
            f"{name}: no request completed in round(s) {row.empty_rounds}; its comparisons are "
            "left out"
            for name, row in self.rows.items()
            if not row.kit and row.empty_rounds
        ]


def _spread(s: Spread | None) -> dict[str, float] | None:
    return None if s is None else {"median": s.median, "min": s.low, "max": s.high}


def _row(row: Row) -> dict[str, Any]:
    return {
        "system": row.system,
        "kit": row.kit,
        "rps": _spread(row.rps),
        "p50_ms": _spread(row.spread(lambda s: s.wrk.p50_ms)),
        "p99_ms": _spread(row.spread(lambda s: s.wrk.p99_ms)),
        "cpu_us_per_request": _spread(row.cpu),
        "socket_errors": row.socket_errors,
        "non_2xx": row.total(lambda w: w.non_2xx),
        "rounds": [
            {
                "round": s.round,
                "position": s.position,
                **asdict(s.wrk),
                "cpu_usec": s.cpu_usec,
                "wrk_cpu_usec": s.wrk_cpu_usec,
                "cpu_us_per_request": s.cpu_us_per_request,
                "processes": s.processes,
                "db_connections_opened": s.db_connections_opened,
            }
            for s in row.samples
        ],
    }


def _comparison(c: Compared) -> dict[str, Any]:
    goal = c.comparison.goal
    return {
        "row": c.comparison.row,
        "baseline": c.comparison.baseline,
        "what": c.comparison.what,
        "rps_ratio_of_medians": c.rps.of_medians,
        "rps_ratio_per_round": list(c.rps.per_round),
        "inside_the_noise": c.rps.within_noise_of(1.0),
        "cpu_per_request_ratio_of_medians": c.cpu.of_medians if c.cpu else None,
        "cpu_per_request_ratio_per_round": list(c.cpu.per_round) if c.cpu else None,
        "goal": goal,
        "goal_verdict": figures.goal_verdict(c.rps, goal) if goal else None,
    }


def as_json(r: Results) -> dict[str, Any]:
    """The layout of bench.json: every round's raw figures, and what the report derives."""
    out: dict[str, Any] = {
        "run": asdict(r.info),
        "machine": asdict(r.machine),
        "rows": {name: _row(row) for name, row in r.rows.items()},
        "idle_cpu_ms_per_second": r.idle_cpu_ms_per_second,
        "idle_cpu_ms_per_second_by_container": r.idle_cpu_ms_per_second_by_container,
        "idle_host_cpu_ms_per_second": r.idle_host_cpu_ms_per_second,
        "comparisons": [_comparison(c) for c in r.compared],
        "kit_failures": r.kit_failures,
        "baseline_problems": r.baseline_problems,
        "duration_seconds": r.duration_seconds,
    }
    if r.tuning is not None:
        out["tuning"] = asdict(r.tuning)
    if r.scaling is not None:
        out["scaling"] = asdict(r.scaling)
    if r.tracing is not None:
        out["tracing"] = asdict(r.tracing)
    if r.startup is not None and r.images is not None:
        out["operations"] = {
            **asdict(r.startup),
            "image_mib": asdict(r.images),
            "image_overhead_mib": round(r.images.api - r.images.base, 1),
            "rebuild_after_code_change_seconds": r.rebuild_seconds,
        }
    return out
