"""The benchmarks: `make bench` (bench.run, the entry point of the modules beside it),
`make bench-compare` (bench.compare), and the cold-start, backups and observability figures."""
