"""Benchmarks for the bridge: run with ``make bench`` or ``python -m bench [name ...]``."""
