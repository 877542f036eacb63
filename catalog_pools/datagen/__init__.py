"""Deterministic synthetic ECMWF/EUMETSAT data for the demo, tests and benchmarks."""
