"""Benchmarks for catalog_pools: pooled vs unpooled across emulated sites.

Run from the repository root, e.g. ``python -m benchmarks.wan --mode plain`` or
(as root) ``python -m benchmarks.wan --mode wan``. See ``docs/benchmarks.md``.
"""
