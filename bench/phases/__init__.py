"""make bench's phases, one module each (BENCH_PHASES): requests, tuning, scaling, operations."""
