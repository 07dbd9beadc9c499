"""Benchmark suite: this library against the engines a user would pick instead (``pytest --benchmark-only``)."""
