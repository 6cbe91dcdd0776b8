"""streamcore's benchmarks: every figure next to a reference measured in the same run.

Run all with ``make bench`` (``python -m bench``); one with ``python -m bench.NAME``.
"""
