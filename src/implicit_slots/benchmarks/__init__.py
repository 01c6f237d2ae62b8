"""Benchmarks that print tables (run through ``implicit-slots bench NAME``); never timed tests."""
