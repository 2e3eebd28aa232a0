"""make bench-compare: the same request scenarios against two builds of the api, A and B,
alternating A, B, B, A, A, B on one stack and one data set, so both see the same machine. Prints
each run, and per scenario the ratio of the medians B / A with the range of the per-round ratios and
whether the difference is inside the noise (bench/figures.py's rule).

Build A from another revision first, for example:
    git worktree add /tmp/kit-a <rev> && (cd /tmp/kit-a && APP_TAG=a docker compose build api)
    make bench-compare A=a B=bench          # ROUNDS=3 by default
B defaults to this checkout (built here as tag `bench`). A/B may also differ only in settings:
    make bench-compare A=bench B=bench B_ENV="DB_POOL_SIZE=5,DB_MAX_OVERFLOW=5"
With an OTEL_EXPORTER_OTLP_ENDPOINT on either side, the profile's Jaeger runs too, to receive:
    make bench-compare SCENARIOS=item_cached ROUNDS=8 \
        B_ENV="OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger:4318,TRACING_SAMPLE_RATIO=0.02"
"""

from __future__ import annotations

import os

import httpx

from bench import figures
from bench.stack import BenchStack, kit_requests, raise_on_sigterm, running
from bench.wrk import wrk

SCENARIOS = ("item_cached", "item_db", "items_page", "create_item")


def settings(spec: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in spec.split(",") if pair)


def main() -> None:
    # `make bench-compare A=` passes an empty value: that means the default too.
    tags = {"A": os.environ.get("A") or "bench", "B": os.environ.get("B") or "bench"}
    envs = {"A": settings(os.environ.get("A_ENV", "")), "B": settings(os.environ.get("B_ENV", ""))}
    rounds = int(os.environ.get("ROUNDS", "3"))
    scenarios = os.environ.get("SCENARIOS", ",".join(SCENARIOS)).split(",")
    rps: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    raise_on_sigterm()
    stack = BenchStack()
    with running(stack):  # builds this checkout as tag `bench`; always taken down
        first_id = stack.seed_items()
        if any(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") for env in envs.values()):
            stack.start_jaeger()
        for round_number in range(rounds):
            # A first in odd rounds, B first in even ones: neither always runs on a warmer stack.
            for side in ("A", "B") if round_number % 2 == 0 else ("B", "A"):
                stack.recreate("api", APP_TAG=tags[side], **envs[side])
                url = stack.api_url()
                requests = kit_requests(url, first_id, stack.token())
                httpx.get(f"{url}/items/{first_id}")  # cached, for item_cached
                for scenario in scenarios:
                    if scenario == "item_db":
                        stack.flush_cache()
                    target, options = requests[scenario]
                    measured = wrk(target, **options)
                    rps[side].setdefault(scenario, []).append(measured.rps)
                    print(
                        f"round {round_number + 1} {side} ({tags[side]}) {scenario}: "
                        f"{measured.rps} req/s, p99 {measured.p99_ms} ms, "
                        f"{measured.socket_errors} socket errors, {measured.non_2xx} non-2xx",
                        flush=True,
                    )
    print(f"\nA = {tags['A']} {envs['A'] or ''}, B = {tags['B']} {envs['B'] or ''}")
    print(
        "| scenario | A req/s | B req/s | B / A (per-round range) | difference |\n"
        "|---|---:|---:|---:|---|"
    )
    for scenario in scenarios:
        a, b = rps["A"][scenario], rps["B"][scenario]
        r = figures.ratio(b, a)
        print(
            f"| {scenario} | {figures.spread(a).show()} | {figures.spread(b).show()} "
            f"| {r.show()} | {figures.difference_verdict(r)} |"
        )


if __name__ == "__main__":
    main()
