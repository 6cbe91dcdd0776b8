"""Benchmarks against references measured in the same run; each writes JSON to bench/results/.

Run one as ``python -m bench.NAME [--quick] [--out FILE]``.
"""
