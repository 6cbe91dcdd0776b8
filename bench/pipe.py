"""Pipe output: vmsplice against write() into a pipe, with two kinds of drain, in one run.

For pipe sizes 64 KiB and 1 MiB, and drains (a) splice to /dev/null and (b) read() into a
buffer, it measures GB/s and CPU seconds per GB of:
- the bare loop (two halves of a buffer sent alternately, untouched): the machine's limit;
- the same with write() instead of vmsplice: the reference the zero-copy path is compared to.
- the engine's PipeSink (the mixer renders, the sink hands the output ring's pages over) with
  zero_copy on (vmsplice) and off (write()), over the same drains: the figure users get.

    python -m bench.pipe [--quick] [--out FILE]
"""

from __future__ import annotations

import os
import threading

from bench.harness import CpuClock, Report, bench_main
from streamcore._native import lib as _lib
from streamcore.pipes import _PageBuffer, set_pipe_size

GB = 1e9


def _measure(pipe_bytes: int, total: int, zero_copy: bool, drain_splice: bool) -> dict:
    read_end, write_end = os.pipe()
    devnull = os.open(os.devnull, os.O_WRONLY)
    size = set_pipe_size(write_end, pipe_bytes)
    buffer = _PageBuffer(2 * size)
    buffer.map.write(b"\x01" * (2 * size))  # touch every page before timing
    drained: list[int] = []
    drain = threading.Thread(  # the C drain runs without the GIL
        target=lambda: drained.append(_lib.sc_pipe_drain(read_end, int(drain_splice), devnull)))
    try:
        with CpuClock() as clock:
            drain.start()
            sent = _lib.sc_pipe_send_halves(write_end, buffer.pointer, size, total,
                                            int(zero_copy))
            os.close(write_end)
            write_end = -1
            drain.join()
    finally:
        if write_end >= 0:
            os.close(write_end)
        os.close(read_end)
        os.close(devnull)
        buffer.close()
    if sent != total or drained != [total]:
        raise RuntimeError(f"sent {sent}, drained {drained}, expected {total}")
    return {"gbps": total / clock.wall / GB, "cpu_s_per_gb": clock.cpu / (total / GB),
            "pipe_size": size}


def _measure_sink(pipe_bytes: int, seconds: float, zero_copy: bool, drain_splice: bool) -> dict:
    """The engine (no voices: it renders silence; realtime if granted) into a PipeSink for
    ``seconds``."""
    import time

    from streamcore import Engine
    from streamcore.sinks.pipe import PipeSink

    read_end, write_end = os.pipe()
    devnull = os.open(os.devnull, os.O_WRONLY)
    drained: list[int] = []
    drain = threading.Thread(
        target=lambda: drained.append(_lib.sc_pipe_drain(read_end, int(drain_splice), devnull)))
    try:
        sink = PipeSink(write_end, format="f32le", pipe_size=pipe_bytes, zero_copy=zero_copy)
        engine = Engine(blocksize=8192, channels=2, sink=sink, watchdog=False)
        try:
            drain.start()
            with CpuClock() as clock:
                engine.start()
                time.sleep(seconds)
                sent = engine.stats().sink["bytes"]
            stats = engine.stats().sink
        finally:
            engine.close()
    finally:
        os.close(write_end)
        drain.join()
        os.close(read_end)
        os.close(devnull)
    if stats["error"]:
        raise RuntimeError(stats["error"])
    return {"gbps": sent / clock.wall / GB, "cpu_s_per_gb": clock.cpu / (sent / GB),
            "pipe_size": stats["pipe_bytes"], "zero_copy": stats["zero_copy"]}


def run(quick: bool = False, smoke: bool = False) -> Report:
    """Measure; ``quick`` sends 256 MiB per case instead of 2 GiB, ``smoke`` 8 MiB (only to
    prove the harness works: its figures mean little)."""
    report = Report("pipe", quick or smoke)
    total = (8 if smoke else 256 if quick else 2048) * 1024 * 1024
    for pipe_bytes in (64 * 1024, 1024 * 1024):
        for drain_splice, drain_name in ((True, "splice to /dev/null"), (False, "read()")):
            label = f"pipe {pipe_bytes // 1024} KiB, drain {drain_name}"
            results = {}
            for zero_copy in (True, False):
                try:
                    results[zero_copy] = _measure(pipe_bytes, total, zero_copy, drain_splice)
                except Exception as e:  # a refused F_SETPIPE_SZ, say: report, don't guess
                    results[zero_copy] = {"error": str(e)}
            z, w = results[True], results[False]
            ref_error = w.get("error")
            report.add(f"bare vmsplice loop, {label}", z.get("gbps"), "GB/s",
                       reference=("bare write() loop", w.get("gbps")), reference_error=ref_error,
                       note=z.get("error"))
            report.add(f"bare vmsplice loop CPU, {label}", z.get("cpu_s_per_gb"), "CPU s/GB",
                       reference=("bare write() loop", w.get("cpu_s_per_gb")),
                       reference_error=ref_error, higher_is_better=False)
            seconds = 0.2 if smoke else 0.5 if quick else 2.0
            sink = {}
            for zero_copy in (True, False):
                try:
                    sink[zero_copy] = _measure_sink(pipe_bytes, seconds, zero_copy, drain_splice)
                except Exception as e:
                    sink[zero_copy] = {"error": str(e)}
            sz, sw = sink[True], sink[False]
            big_splice = pipe_bytes == 1024 * 1024 and drain_splice
            report.add(f"PipeSink vmsplice path, {label}", sz.get("gbps"), "GB/s",
                       reference=("PipeSink write() path", sw.get("gbps")),
                       reference_error=sw.get("error"), note=sz.get("error"),
                       goal=">= 3x" if big_splice else None)
            report.add(f"PipeSink vmsplice path vs the bare loop, {label}", sz.get("gbps"),
                       "GB/s", reference=("bare vmsplice loop", z.get("gbps")),
                       reference_error=z.get("error"), note=sz.get("error"),
                       goal=">= 0.8x" if big_splice else None)
            report.add(f"PipeSink vmsplice path CPU, {label}", sz.get("cpu_s_per_gb"),
                       "CPU s/GB", reference=("PipeSink write() path", sw.get("cpu_s_per_gb")),
                       reference_error=sw.get("error"), higher_is_better=False,
                       note="whole process: mixer, sink and drain threads")
    return report


def main(argv: list[str] | None = None) -> int:
    return bench_main("pipe", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
