"""The benchmark's pure logic (bench/figures.py): wrk's report, cgroup CPU counters, the host's
CPU beside wrk's, process counts, and the statistics over rounds; the report rendered from made-up
results (bench/results.py, bench/report.py); the wrk runner against a stand-in wrk. No Docker, no
real wrk."""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import figures as f
from bench import record, report, results
from bench.containers import network_address
from bench.phases import requests, tuning
from bench.stack import Measured, Memory
from bench.wrk import run_wrk
from tests.support import ROOT

WRK_CLEAN = """\
Running 8s test @ http://172.30.253.130:8000/items/1
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.12ms    4.01ms  61.20ms   80.11%
    Req/Sec     1.76k   210.33     2.10k    71.25%
  Latency Distribution
     50%  812.00us
     75%   10.02ms
     90%   14.31ms
     99%    1.02s
  28000 requests in 8.00s, 9.88MB read
Requests/sec:   3499.87
Transfer/sec:      1.23MB
"""

WRK_ERRORS = """\
Running 8s test @ http://172.30.253.130:8000/health
  2 threads and 32 connections
  Latency Distribution
     50%    2.85ms
     75%    4.00ms
     90%    9.00ms
     99%   19.92ms
  75084 requests in 8.00s, 10.1MB read
  Socket errors: connect 1, read 110, write 2, timeout 3
  Non-2xx or 3xx responses: 17
Requests/sec:   9385.51
Transfer/sec:      1.26MB
"""


def test_wrk_report_without_errors():
    w = f.parse_wrk(WRK_CLEAN)
    assert (w.rps, w.requests, w.p50_ms, w.p99_ms) == (3499.9, 28000, 0.812, 1020.0)
    assert (w.socket_errors, w.non_2xx, w.errors) == (0, 0, 0)


def test_wrk_report_counts_each_socket_error_and_non_2xx():
    w = f.parse_wrk(WRK_ERRORS)
    assert (w.connect_errors, w.read_errors, w.write_errors, w.timeouts) == (1, 110, 2, 3)
    assert w.non_2xx == 17
    assert (w.socket_errors, w.errors) == (116, 133)
    assert (w.rps, w.requests, w.p50_ms, w.p99_ms) == (9385.5, 75084, 2.85, 19.92)


def test_wrk_report_missing_figures_is_an_error_not_a_zero():
    with pytest.raises(f.WrkOutputError):
        f.parse_wrk("unable to connect to 172.30.253.130:8000 Connection refused\n")
    without_latency = "\n".join(line for line in WRK_CLEAN.splitlines() if "%" not in line)
    with pytest.raises(f.WrkOutputError):
        f.parse_wrk(without_latency)


@pytest.mark.parametrize(
    ("text", "expected"), [("812.00us", 0.812), ("1.23ms", 1.23), ("2.01s", 2010.0)]
)
def test_wrk_latency_units(text, expected):
    assert f.ms(text) == expected


def test_cpu_stat_v2_and_cpuacct_v1():
    stat = "usage_usec 5436561\nuser_usec 4752409\nsystem_usec 684151\nnice_usec 0\n"
    assert f.parse_cpu_stat(stat) == 5436561
    assert f.parse_cpuacct_usage("5436561459\n") == 5436561
    with pytest.raises(ValueError):
        f.parse_cpu_stat("user_usec 1\n")


HYBRID = """\
9:name=systemd:/docker/abc
2:cpuacct:/docker/abc
1:cpu:/docker/abc
0::/docker/abc
"""


def test_cpu_counter_files_v2_first_then_v1():
    files = f.cpu_counter_files(HYBRID, root=Path("/cg"))
    assert files[:2] == [Path("/cg/docker/abc/cpu.stat"), Path("/cg/unified/docker/abc/cpu.stat")]
    assert Path("/cg/cpuacct/docker/abc/cpuacct.usage") in files
    assert all(p.name in ("cpu.stat", "cpuacct.usage") for p in files)
    unified = f.cpu_counter_files("0::/system.slice/docker-abc.scope\n", root=Path("/cg"))
    assert unified[0] == Path("/cg/system.slice/docker-abc.scope/cpu.stat")


def test_read_cpu_counter_takes_the_first_file_that_exists(tmp_path):
    v1 = tmp_path / "cpuacct" / "docker" / "abc" / "cpuacct.usage"
    v1.parent.mkdir(parents=True)
    v1.write_text("2000000\n")
    files = f.cpu_counter_files(HYBRID, root=tmp_path)
    assert f.read_cpu_counter(files) == 2000
    v2 = tmp_path / "unified" / "docker" / "abc" / "cpu.stat"
    v2.parent.mkdir(parents=True)
    v2.write_text("usage_usec 7\nuser_usec 5\n")
    assert f.read_cpu_counter(files) == 7
    assert f.read_cpu_counter([tmp_path / "absent" / "cpu.stat"]) is None


PROC_STAT = """\
cpu  96312 5 25588 21873 1208 7 465 330 11 13
cpu0 47253 0 12194 12853 362 0 40 162 0 0
intr 123 0 0
"""


def test_host_busy_ticks_are_user_nice_system_irq_softirq():
    # Not idle (21873), iowait (1208), steal (330), nor guest and guest_nice (inside user, nice).
    assert f.host_busy_ticks(PROC_STAT) == 96312 + 5 + 25588 + 7 + 465
    assert f.host_busy_ticks(Path("/proc/stat").read_text()) > 0
    with pytest.raises(ValueError):
        f.host_busy_ticks("cpu0 1 2 3 4 5 6 7\n")


def test_process_cpu_ticks_are_utime_plus_stime_after_the_name():
    stat = "14936 (a (b) c) S 14917 14917 27661 0 -1 4194304 98 0 0 0 7 3 5 6 20 0 1 0 73314\n"
    assert f.process_cpu_ticks(stat) == 10  # utime 7 + stime 3, not the children's 5 and 6
    assert f.process_cpu_ticks(Path("/proc/self/stat").read_text()) >= 0


def test_cpu_beside_load_is_the_hosts_busy_time_less_the_generators():
    # 300 busy ticks on the host over the run, 100 of them wrk's, at 100 ticks a second: 2 s.
    assert f.cpu_beside_load(1000, 1300, 100, 100) == 2_000_000
    assert f.cpu_beside_load(1000, 1000, 0, 100) == 0
    assert f.usec(3, 250) == 12_000
    with pytest.raises(ValueError):
        f.cpu_beside_load(1300, 1000, 0, 100)


def test_run_wrk_reads_the_generators_own_cpu_before_it_is_reaped(tmp_path, monkeypatch):
    """A stand-in wrk that burns about 0.3 s of CPU, then prints a report: its CPU is counted
    from its /proc/<pid>/stat once it has exited, and left out of the host's figure."""
    fake = tmp_path / "wrk"
    fake.write_text(
        f"#!{sys.executable}\nimport time\nend = time.process_time() + 0.3\n"
        f"while time.process_time() < end: pass\nprint({WRK_CLEAN!r})\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    called: list[bool] = []
    loaded = run_wrk("http://127.0.0.1:9/", seconds=1, during=lambda: called.append(True))
    assert loaded.wrk == f.parse_wrk(WRK_CLEAN)
    assert called == [True]
    assert loaded.wrk_cpu_usec is not None and 200_000 <= loaded.wrk_cpu_usec <= 2_000_000
    assert loaded.cpu_usec is not None


def test_network_address_from_docker_inspect():
    inspected = json.dumps(
        [
            {
                "NetworkSettings": {
                    "Networks": {
                        "kit-bench_edge": {"IPAddress": "172.18.0.3"},
                        "kit-bench_socket": {"IPAddress": ""},
                    }
                }
            }
        ]
    )
    assert network_address(inspected, "kit-bench_edge") == "172.18.0.3"
    assert network_address(inspected, "kit-bench_socket") is None
    assert network_address(inspected, "kit-test_edge") is None


def test_count_processes_in_docker_top():
    one = "PID   PPID  COMMAND\n4242  4200  uvicorn\n"
    supervisor = one + "4300  4242  python\n4301  4242  python\n"
    assert (f.count_processes(one), f.count_processes(supervisor)) == (1, 3)
    assert f.count_processes("PID PPID COMMAND\n") == 0


def test_spread_is_median_and_range():
    s = f.spread([300.0, 100.0, 200.0])
    assert (s.median, s.low, s.high, s.n) == (200.0, 100.0, 300.0, 3)
    assert s.relative == 1.0
    assert s.show() == "200.0 (100.0..300.0)"
    assert f.spread([5.0]).show() == "5.0"
    with pytest.raises(ValueError):
        f.spread([])


def test_ratio_of_medians_and_per_round_range():
    r = f.ratio([200.0, 220.0, 180.0], [100.0, 100.0, 120.0])
    assert r.of_medians == 2.0
    assert r.per_round == (2.0, 2.2, 1.5)
    assert (r.low, r.high) == (1.5, 2.2)
    assert r.show() == "2.00 (1.50..2.20)"
    with pytest.raises(ValueError):
        f.ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        f.ratio([1.0], [0.0])


def test_noise_rule_is_per_round_ratios_on_both_sides():
    clear = f.ratio([110.0, 120.0, 115.0], [100.0, 100.0, 100.0])
    straddling = f.ratio([110.0, 95.0, 105.0], [100.0, 100.0, 100.0])
    assert not clear.within_noise_of(1.0)
    assert straddling.within_noise_of(1.0)
    assert f.difference_verdict(clear) == "faster"
    assert f.difference_verdict(straddling) == "inside the noise"
    assert f.difference_verdict(f.ratio([80.0, 85.0], [100.0, 100.0])) == "slower"
    # One round has no spread: never a clear difference.
    assert f.ratio([200.0], [100.0]).within_noise_of(1.0)
    assert f.difference_verdict(f.ratio([200.0], [100.0])) == "one round: no spread"


def test_goal_verdicts():
    assert f.goal_verdict(f.ratio([210.0, 220.0, 230.0], [100.0] * 3), 2.0) == "met"
    assert f.goal_verdict(f.ratio([150.0, 160.0, 170.0], [100.0] * 3), 2.0) == "NOT MET"
    assert f.goal_verdict(f.ratio([190.0, 205.0, 210.0], [100.0] * 3), 2.0).startswith(
        "met (inside the noise"
    )
    assert f.goal_verdict(f.ratio([190.0, 195.0, 201.0], [100.0] * 3), 2.0).startswith(
        "NOT MET (inside the noise"
    )
    assert f.goal_verdict(f.ratio([300.0], [100.0]), 2.0).startswith("met (one round")


@pytest.mark.parametrize(
    "module",
    [
        "bench.figures",
        "bench.run",
        "bench.compare",
        "bench.config",
        "bench.wrk",
        "bench.containers",
        "bench.baselines",
        "bench.stack",
        "bench.phases.requests",
        "bench.phases.tuning",
        "bench.phases.scaling",
        "bench.phases.tracing",
        "bench.phases.operations",
        "bench.measure",
        "bench.record",
        "bench.results",
        "bench.report",
        "bench.coldstart",
        "bench.backups",
        "bench.observability",
    ],
)
def test_importing_bench_modules_runs_nothing(module, tmp_path):
    """No docker, no wrk, no files written at import: a fresh interpreter whose PATH has a
    `docker` and a `wrk` that record being called."""
    calls = tmp_path / "calls"
    for tool in ("docker", "wrk"):
        script = tmp_path / tool
        script.write_text(f"#!/bin/sh\necho {tool} >> {calls}\nexit 1\n")
        script.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, env=env, check=True, timeout=60
    )
    assert not calls.exists()
    importlib.import_module(module)  # and in this process, for the coverage of the names


def _report(kit_read_errors: int = 0):
    """A Results of two rounds of the item_cached and item_db groups, made up, through the real
    report code (bench.report.markdown and bench.results.as_json)."""

    def sample(rnd: int, rps: float, cpu: int, read_errors: int = 0) -> requests.Sample:
        w = f.Wrk(rps=rps, p50_ms=1.0, p99_ms=9.0, requests=int(rps * 8), read_errors=read_errors)
        return requests.Sample(rnd, 0, w, cpu, 1, None)

    rows = {
        "item_cached": results.Row(
            "kit", True, [sample(1, 1000, 800_000, kit_read_errors), sample(2, 1100, 800_000)]
        ),
        "tutorial_item": results.Row(
            "tutorial", False, [sample(1, 900, 900_000), sample(2, 1000, 900_000)]
        ),
        "item_db": results.Row("kit", True, [sample(1, 700, 900_000), sample(2, 650, 900_000)]),
        "peer_item": results.Row(
            "template peer", False, [sample(1, 300, 2_000_000), sample(2, 350, 2_000_000)]
        ),
    }
    machine = record.Machine(
        2, "cpu", 1.0, "k", "20.10", "cgroup v2", "now", "-t2", "addr", (0.1, 0.2, 0.3), 0
    )
    info = record.RunInfo(
        "abc",
        False,
        "make bench",
        2,
        ("item_cached", "item_db"),
        ("requests",),
        {"postgres:17": {"stand_in": True, "inside": "PostgreSQL 15.18"}},
    )
    made_up = results.Results(
        info, machine, rows, {"kit": 1.0}, {}, None, None, None, None, None, 60
    )
    return made_up, report.markdown(made_up), results.as_json(made_up)


def test_report_goals_comparisons_and_stand_ins():
    made_up, md, data = _report()
    assert made_up.kit_failures == []
    assert "| `postgres:17` | yes | PostgreSQL 15.18 |" in md
    # 1050 / 950 = 1.11, rounds 1.11 and 1.10: met, outside the noise.
    assert "| 1.11 (1.10..1.11) | met |" in md
    # 675 / 325 = 2.08, rounds 2.33 and 1.86: met, but inside the noise of the goal.
    assert "2.08 (1.86..2.33) | met (inside the noise" in md
    by_row = {c["row"]: c for c in data["comparisons"]}
    assert by_row["item_db"]["cpu_per_request_ratio_per_round"] is not None
    assert data["rows"]["item_cached"]["rounds"][0]["cpu_us_per_request"] == 100.0
    assert "FAILED" not in md


def test_report_fails_loudly_on_a_kit_row_with_errors():
    made_up, md, data = _report(kit_read_errors=3)
    assert made_up.kit_failures and made_up.kit_failures[0].startswith("item_cached: 3 failed")
    assert "**FAILED: kit rows with failed requests**" in md
    assert "| **0/3/0/0** | **0** | 1 | - |" in md
    assert data["kit_failures"] == made_up.kit_failures


def test_report_a_round_that_completed_nothing():
    made_up, _, _ = _report()
    empty = requests.Sample(3, 0, f.Wrk(rps=0.0, p50_ms=0.0, p99_ms=0.0), 1000, 1, None)
    rows = dict(made_up.rows)
    rows["item_cached"] = results.Row("kit", True, [*rows["item_cached"].samples[:1], empty])
    rows["peer_item"] = results.Row("template peer", False, [*rows["peer_item"].samples[:1], empty])
    broken = results.Results(**{**made_up.__dict__, "rows": rows})
    assert "item_cached: no request completed in round(s) [3]" in broken.kit_failures
    assert broken.baseline_problems[0].startswith("peer_item: no request completed")
    assert {c.comparison.row for c in broken.compared} == {"item_cached"}
    md = report.markdown(broken)
    assert "**Baselines that measured nothing in a round:**" in md
    assert "| item_db / peer_item" not in md


def test_report_the_tuning_rows():
    made_up, _, _ = _report()

    def w(rps: float) -> f.Wrk:
        return f.Wrk(rps=rps, p50_ms=1.0, p99_ms=9.0, requests=int(rps * 8))

    def measured(rps: float, opened: int) -> Measured:
        return Measured(rps=rps, p50_ms=1.0, p99_ms=9.0, db_connections_opened=opened)

    tuned = tuning.Tuning(
        keep_alive=w(3000),
        connection_close=w(1000),
        memory_preload=Memory(2, 80.0, 40.0),
        reference=w(2000),
        reference_page=measured(900, 0),
        access_log_all=w(1000),
        proxy_reference=w(1100),
        proxy_log_problems=w(1320),
        host_cpus=2,
        go_threads=(
            (tuning.Proxied(w(1100), 300.0), tuning.Proxied(w(1000), 400.0)),
            (tuning.Proxied(w(1000), 310.0), tuning.Proxied(w(1000), 380.0)),
            (tuning.Proxied(w(900), 290.0), tuning.Proxied(w(1000), 420.0)),
        ),
        pool_overflow_5_5=measured(600, 40),
    )
    md = report.markdown(results.Results(**{**made_up.__dict__, "tuning": tuned}))
    assert (
        "| Traefik on one Go thread (PROXY_GOMAXPROCS=1, default) vs Go's default here (2), "
        "cached item via proxy req/s, 3 alternating pairs (Traefik's CPU per request: "
        "0.75 (0.69..0.82) of it) | 1.00 (0.90..1.10) |"
    ) in md
    assert (
        "(PROXY_ACCESS_LOG_CODES=400-599) vs every request (default), cached item via proxy "
        "req/s | 1.2 |" in md
    )
    # No CPU counter (Docker Desktop): the ratio of throughput alone; one CPU: no row.
    blind = dataclasses.replace(
        tuned, go_threads=((tuning.Proxied(w(1100), None), tuning.Proxied(w(1000), None)),)
    )
    md = report.markdown(results.Results(**{**made_up.__dict__, "tuning": blind}))
    assert "vs Go's default here (2), cached item via proxy req/s, 1 alternating pair |" in md
    alone = dataclasses.replace(tuned, host_cpus=1, go_threads=())
    alone_md = report.markdown(results.Results(**{**made_up.__dict__, "tuning": alone}))
    assert "Go thread" not in alone_md
    pairs = results.as_json(results.Results(**{**made_up.__dict__, "tuning": tuned}))["tuning"][
        "go_threads"
    ]
    assert pairs[0][1] == {"wrk": dataclasses.asdict(w(1000)), "proxy_cpu_us": 400.0}


def test_report_the_tracing_rows():
    from bench.phases import tracing

    made_up, _, _ = _report()

    def traced(ratio: float | None, rps: float, cpu: float | None, jobs: float) -> tracing.Traced:
        w = f.Wrk(rps=rps, p50_ms=1.0, p99_ms=9.0, requests=int(rps * 8))
        return tracing.Traced(ratio, w, cpu, f.Wrk(rps=500, p50_ms=2.0, p99_ms=9.0), None, jobs)

    # Two rounds: the medians of two figures are their means; "of off" pairs each round.
    cost = tracing.TracingCost(
        default_ratio=0.02,
        off=(traced(None, 2000, 400.0, 3.5), traced(None, 2200, 380.0, 3.7)),
        default=(traced(0.02, 1900, 420.0, 3.4), traced(0.02, 2090, 400.0, 3.6)),
        every=(traced(1.0, 1500, 560.0, 3.1), traced(1.0, 1100, None, 3.3)),
    )
    md = report.markdown(results.Results(**{**made_up.__dict__, "tracing": cost}))
    assert "the api direct, 2 rounds" in md
    assert (
        "| off (no endpoint: the default) | 2100 (2000..2200) | 390.0 µs | 1.00 (1.00..1.00) "
        "| 500 (500..500) | - | 3.60 (3.50..3.70) |" in md
    )
    default = "| TRACING_SAMPLE_RATIO=0.02 (default ratio) | 1995 (1900..2090) | 410.0 µs |"
    assert default + " 0.95 (0.95..0.95) |" in md
    # A round without a CPU counter is left out of the median, not counted as 0.
    every = "| TRACING_SAMPLE_RATIO=1 (every trace) | 1300 (1100..1500) | 560.0 µs |"
    assert every + " 0.62 (0.50..0.75) |" in md
    assert "keeps at least 0.9 of off's cached item throughput: met." in md
    slow = dataclasses.replace(cost, default=cost.every)
    assert "NOT MET" in report.markdown(results.Results(**{**made_up.__dict__, "tracing": slow}))
    data = results.as_json(results.Results(**{**made_up.__dict__, "tracing": cost}))
    assert [r["jobs_per_second"] for r in data["tracing"]["every"]] == [3.1, 3.3]


def test_the_machine_line_says_where_the_proxy_rows_went():
    # The proxy URLs the proxy rows used: none, Traefik's edge address, or the published port.
    assert record.load_target([]) == "container addresses on their Docker networks"
    edge = ["https://172.18.0.3:8443", "https://172.18.0.7:8443"]
    assert record.load_target(edge).endswith("Traefik's too (no docker-proxy)")
    published = ["https://127.0.0.1:58543"]
    assert record.load_target(published).startswith(
        "published loopback ports, through docker-proxy"
    )
