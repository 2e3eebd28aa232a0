"""make bench: throughput, latency and CPU per request of the kit against what users would run
instead, each measured next to the kit row it is divided into, in alternating rounds; then
tuning, scaling and operations figures.

Load comes from wrk on this host, to the containers' own addresses. Every request row runs
BENCH_ROUNDS times (default 3); in each round a kit row and its baselines run back to back, their
order rotating from round to round, so slow drift of a noisy machine lands on both. Each row
reports the median and the range over the rounds, wrk's socket errors and non-2xx answers, and
CPU microseconds per request: the whole host's CPU over the row less wrk's own (so also what the
engine spends outside every container). Ratios are ratios of medians, printed with the range of
the per-round ratios; a difference whose per-round ratios fall on both sides of 1 is inside the
noise (bench/figures.py).

Baselines:
- tutorial: bench/tutorial_app.py under uvicorn, one process (checked during each row);
- template peer: bench/peer/ (`fastapi run --workers 4`, sync SQLModel + psycopg in `def`
  endpoints, no cache) on the same PostgreSQL and table as the kit;
- bare ASGI: bench/bare_asgi.py under the kit's own gunicorn settings: the server's ceiling.

Writes bench-results/bench.json and bench-results/benchmarks.md (git-ignored scratch). With
BENCH_PUBLISH=1 (`make bench-publish`, a clean checkout) also docs/benchmarks.md and
docs/bench-results/bench.json, the published run. Exits 1 if a kit row had a failed request.

Settings (environment): BENCH_ROUNDS, BENCH_SECONDS, BENCH_CONNECTIONS; BENCH_HTTPS_PORT if
another stack holds the default (58543); BENCH_ROWS, a comma list of request groups (health,
item_cached, item_db, items_page, create_item; default all); BENCH_PHASES, a comma list of
requests, tuning, scaling, tracing, operations (default all). A subset is for checking the
bench itself, never for publishing.

Run from the repository root as `python -m bench.run` (what `make bench` does), so `bench` and
`tests` are plain packages; the stack helpers are the tests' own (tests/support/). This module is
the entry point only; the modules it runs, each with one job: config (settings and names), wrk
(the load and the host's CPU beside it), containers, baselines, stack (BenchStack), phases/
(requests, tuning, scaling, tracing, operations), measure (the run), record (machine, commit,
images), results (rows, comparisons, bench.json), report (benchmarks.md). Importing any of them
starts nothing: main() runs the phases inside `running(stack)` and `baselines(...)`, which always
take the stack and every baseline container down.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.config import GROUPS, PHASES, ROUNDS, log, selected
from bench.measure import measure
from bench.record import git_commit, other_containers
from bench.report import markdown
from bench.results import Results, as_json
from bench.stack import raise_on_sigterm
from tests.support import ROOT


def write(results: Results, directory: Path, report: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.json").write_text(json.dumps(as_json(results), indent=2) + "\n")
    (directory / "benchmarks.md").write_text(report)


def main() -> None:
    raise_on_sigterm()
    groups = selected("BENCH_ROWS", list(GROUPS))
    phases = selected("BENCH_PHASES", PHASES)
    publish = os.environ.get("BENCH_PUBLISH") == "1"
    if publish:
        # Published figures name the commit they measured: it must be exactly that commit, and
        # the whole bench.
        _, dirty = git_commit()
        if dirty or groups != tuple(GROUPS) or phases != PHASES or ROUNDS < 3:
            raise SystemExit(
                "bench-publish: needs a clean checkout, every row and phase, and BENCH_ROUNDS >= 3"
            )
    if publish and (os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1) or other_containers()):
        # Not refused (the report records both), but these figures are meant to be defended.
        log(
            f"warning: load average {os.getloadavg()[0]:.1f} and {other_containers()} other "
            "containers running: this machine is not quiet"
        )
    results = measure(groups, phases, ROUNDS)
    report = markdown(results)
    write(results, ROOT / "bench-results", report)
    if publish:
        # The report links its raw figures as bench-results/bench.json, next to it in docs/.
        (ROOT / "docs" / "benchmarks.md").write_text(report)
        (ROOT / "docs" / "bench-results").mkdir(parents=True, exist_ok=True)
        (ROOT / "docs" / "bench-results" / "bench.json").write_text(
            json.dumps(as_json(results), indent=2) + "\n"
        )
    print(report)
    if results.kit_failures:
        log("FAILED: kit rows with failed requests:\n  " + "\n  ".join(results.kit_failures))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
