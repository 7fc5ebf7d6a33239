"""The benchmark suite behind `make bench` and `make bench-quick` (see docs/performance.md)."""
