"""Benchmarks that print tables (run through ``implicit-slots bench NAME``); never timed tests."""


class BenchmarkError(ValueError):
    """A benchmark's arguments or inputs are invalid; ``implicit-slots bench`` prints the message (exit 2)."""
