"""Benchmarks of issue 7: `make bench` (`python -m bench`) writes docs/BENCHMARKS.md."""
