"""Pipe output: vmsplice against write() into a pipe, with two kinds of drain, in one run.

For pipe sizes 64 KiB and 1 MiB, and drains (a) splice to /dev/null and (b) read() into a
buffer, it measures GB/s and CPU seconds per GB of (in alternating turns, medians reported):
- the bare loop (two halves of a buffer sent alternately, untouched): the machine's limit;
- the same with write() instead of vmsplice: the reference the zero-copy path is compared to.
- the engine's PipeSink (the mixer renders a looping voice, the sink hands the output over):
  its default path into a pipe (a copy: a reader might splice the pages onward, see
  streamcore/sinks/pipe.py) and the zero-copy opt-in (vmsplice, released by FIONREAD), over
  the same drains: the figures users get.  The splice drain is a splicing consumer.

    python -m bench.pipe [--quick] [--out FILE]
"""

from __future__ import annotations

import os
import statistics
import threading

from bench.drivers import PageBuffer
from bench.drivers import lib as _lib
from bench.harness import CpuClock, Report, bench_main
from streamcore.pipes import set_pipe_size

GB = 1e9


def _measure(pipe_bytes: int, total: int, zero_copy: bool, drain_splice: bool) -> dict:
    read_end, write_end = os.pipe()
    devnull = os.open(os.devnull, os.O_WRONLY)
    size = set_pipe_size(write_end, pipe_bytes)
    buffer = PageBuffer(2 * size)
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


def _measure_sink(pipe_bytes: int, seconds: float, zero_copy: bool | None,
                  drain_splice: bool) -> dict:
    """The engine (one looping voice; realtime if granted) into a PipeSink, for ``seconds``
    after a short start."""
    import time

    import numpy as np

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
        noise = (np.random.default_rng(1).standard_normal((8192, 2)) * 0.1).astype(np.float32)
        try:
            drain.start()
            engine.play(noise, loop=True)  # a reader sink renders only what voices play
            engine.start()
            time.sleep(0.05)  # past the start (realtime grant, first fill): the steady state
            with CpuClock() as clock:
                before = engine.stats().sink["bytes"]
                time.sleep(seconds)
                sent = engine.stats().sink["bytes"] - before
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
            "pipe_size": stats["pipe_bytes"], "zero_copy": stats["zero_copy"],
            "writer": stats["writer"]}


def _median(samples: list[dict], key: str) -> float | None:
    values = [x[key] for x in samples if key in x]
    return statistics.median(values) if values else None


def _error(samples: list[dict]) -> str | None:
    return next((x["error"] for x in samples if "error" in x), None)


def _spread(ours: list[dict], refs: list[dict]) -> str:
    """The per-turn ratios, lowest and highest: how much one turn's figure can be trusted."""
    ratios = [o["gbps"] / r["gbps"] for o, r in zip(ours, refs, strict=True)
              if "gbps" in o and "gbps" in r and r["gbps"]]
    if len(ratios) < 2:
        return ""
    return f"; per-turn ratio {min(ratios):.2f}-{max(ratios):.2f}x"


def run(quick: bool = False, smoke: bool = False) -> Report:
    """Measure, in alternating turns (the four paths of a case take turns, so the machine's
    slow moments fall on all of them alike); each figure is the median over the turns.
    ``quick`` runs 3 turns of 128 MiB (0.3 s for the sink) instead of 5 of 512 MiB (0.5 s);
    ``smoke`` one turn of 8 MiB (only to prove the harness works: its figures mean little)."""
    report = Report("pipe", quick or smoke)
    turns = 1 if smoke else 3 if quick else 5
    total = (8 if smoke else 128 if quick else 512) * 1024 * 1024
    seconds = 0.2 if smoke else 0.3 if quick else 0.5
    for pipe_bytes in (64 * 1024, 1024 * 1024):
        for drain_splice, drain_name in ((True, "splice to /dev/null"), (False, "read()")):
            label = f"pipe {pipe_bytes // 1024} KiB, drain {drain_name}"
            paths: dict[str, list[dict]] = {"bare": [], "bare write": [], "sink": [],
                                            "sink zero copy": []}
            for _ in range(turns):
                for name, samples in paths.items():
                    try:
                        if name.startswith("bare"):
                            samples.append(_measure(pipe_bytes, total, name == "bare",
                                                    drain_splice))
                        else:
                            samples.append(_measure_sink(pipe_bytes, seconds,
                                                         True if "zero" in name else None,
                                                         drain_splice))
                    except Exception as e:  # a refused F_SETPIPE_SZ, say: report, don't guess
                        samples.append({"error": str(e)})
            z, w = paths["bare"], paths["bare write"]
            sd, sz = paths["sink"], paths["sink zero copy"]
            how = f"median of {turns} alternating turns"
            report.add(f"bare vmsplice loop, {label}", _median(z, "gbps"), "GB/s",
                       reference=("bare write() loop", _median(w, "gbps")),
                       reference_error=_error(w), note=_error(z) or how + _spread(z, w))
            report.add(f"bare vmsplice loop CPU, {label}", _median(z, "cpu_s_per_gb"),
                       "CPU s/GB", reference=("bare write() loop", _median(w, "cpu_s_per_gb")),
                       reference_error=_error(w), higher_is_better=False)
            big = pipe_bytes == 1024 * 1024
            writer = next((x["writer"] for x in sd if "writer" in x), "?")
            mode = next((("zero copy" if x["zero_copy"] else "copy") for x in sd
                         if "zero_copy" in x), "?")
            report.add(f"PipeSink default path ({mode}), {label}", _median(sd, "gbps"), "GB/s",
                       reference=("bare write() loop", _median(w, "gbps")),
                       reference_error=_error(w), note=_error(sd) or how + _spread(sd, w),
                       goal=">= 3x" if big else None)
            report.add(f"PipeSink default path vs the bare vmsplice loop, {label}",
                       _median(sd, "gbps"), "GB/s",
                       reference=("bare vmsplice loop", _median(z, "gbps")),
                       reference_error=_error(z),
                       note=_error(sd) or f"{how}{_spread(sd, z)}; written by the {writer}",
                       goal=">= 0.5x" if big else None)
            report.add(f"PipeSink default path CPU, {label}", _median(sd, "cpu_s_per_gb"),
                       "CPU s/GB", reference=("bare write() loop", _median(w, "cpu_s_per_gb")),
                       reference_error=_error(w), higher_is_better=False,
                       goal="<= 0.3x" if big else None,
                       note="whole process: the mixer rendering and writing, and the drain")
            report.add(f"PipeSink zero_copy=True, {label}", _median(sz, "gbps"), "GB/s",
                       reference=("PipeSink default path", _median(sd, "gbps")),
                       reference_error=_error(sd), note=_error(sz) or how + _spread(sz, sd))
            report.add(f"PipeSink zero_copy=True CPU, {label}", _median(sz, "cpu_s_per_gb"),
                       "CPU s/GB",
                       reference=("PipeSink default path", _median(sd, "cpu_s_per_gb")),
                       reference_error=_error(sd), higher_is_better=False)
    return report


def main(argv: list[str] | None = None) -> int:
    return bench_main("pipe", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
