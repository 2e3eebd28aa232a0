"""The benchmark: `make bench` (bench.run) and `make bench-compare` (bench.compare)."""
