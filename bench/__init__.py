"""streamcore's benchmarks: every figure next to a reference measured in the same run; each
writes JSON to bench/results/.

Run all with ``make bench`` (``python -m bench``); one with ``python -m bench.NAME [--quick]
[--out FILE]``.
"""
