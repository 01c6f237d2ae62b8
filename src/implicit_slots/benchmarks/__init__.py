"""Benchmarks that print tables (run through ``implicit-slots bench NAME``); never timed tests."""


class BenchmarkError(Exception):
    """A user-facing benchmark error (bad option, missing file): the command line prints it as one line."""
