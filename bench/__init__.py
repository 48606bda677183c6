"""Benchmarks; results and how to run them in bench/RESULTS.md."""
