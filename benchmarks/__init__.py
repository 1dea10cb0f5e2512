"""Benchmarks: eventstore against the eventsourcing library's recorders and raw drivers.

Run ``python3 dev.py bench`` (or ``python benchmarks/run.py --help``); they print
figures and never assert on timings. docs/benchmarks.md holds a measured run.
"""
