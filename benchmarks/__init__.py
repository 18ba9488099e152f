"""Benchmarks: each reports runstate next to a baseline measured in the same run."""
