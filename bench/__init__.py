"""Benchmarks of the Telentir server (not part of `make test`; `--quick` is)."""
