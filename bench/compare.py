"""make bench-compare: the same request scenarios against two builds of the api, A and B,
alternating A, B, A, B on one stack and one data set, so both see the same machine. Prints each
run and the ratio of the medians, B / A.

Build A from another revision first, for example:
    git worktree add /tmp/kit-a <rev> && (cd /tmp/kit-a && APP_TAG=a docker compose build api)
    make bench-compare A=a B=bench
B defaults to this checkout (built here as tag `bench`). A/B may also differ only in settings:
    make bench-compare A=bench B=bench B_ENV="DB_POOL_SIZE=5,DB_MAX_OVERFLOW=5"
"""

from __future__ import annotations

import os
import statistics

import httpx

from bench import run as bench

SCENARIOS = ("item_cached", "item_db", "items_page", "create_item")


def settings(spec: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in spec.split(",") if pair)


def main() -> None:
    # `make bench-compare A=` passes an empty value: that means the default too.
    tags = {"A": os.environ.get("A") or "bench", "B": os.environ.get("B") or "bench"}
    envs = {"A": settings(os.environ.get("A_ENV", "")), "B": settings(os.environ.get("B_ENV", ""))}
    rounds = int(os.environ.get("ROUNDS", "2"))
    scenarios = os.environ.get("SCENARIOS", ",".join(SCENARIOS)).split(",")
    rps: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    bench.raise_on_sigterm()
    stack = bench.BenchStack()
    with bench.running(stack):  # builds this checkout as tag `bench`; always taken down
        first_id = stack.seed_items()
        for round_number in range(rounds):
            for side in ("A", "B"):
                stack.recreate("api", APP_TAG=tags[side], **envs[side])
                url = stack.api_url()
                requests = bench.kit_requests(url, first_id, stack.token())
                httpx.get(f"{url}/items/{first_id}")  # cached, for item_cached
                for scenario in scenarios:
                    if scenario == "item_db":
                        stack.flush_cache()
                    target, options = requests[scenario]
                    figures = bench.wrk(target, **options)
                    rps[side].setdefault(scenario, []).append(figures.rps)
                    print(
                        f"round {round_number + 1} {side} ({tags[side]}) {scenario}: "
                        f"{figures.rps} req/s, p99 {figures.p99_ms} ms, "
                        f"{figures.errors} errors",
                        flush=True,
                    )
    print(f"\nA = {tags['A']} {envs['A'] or ''}, B = {tags['B']} {envs['B'] or ''}")
    print("| scenario | A req/s | B req/s | B / A |\n|---|---:|---:|---:|")
    for scenario in scenarios:
        a, b = statistics.median(rps["A"][scenario]), statistics.median(rps["B"][scenario])
        print(f"| {scenario} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
