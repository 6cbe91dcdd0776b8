"""Mixing throughput: how many stereo voices fit in half a period, streamcore against numpy.

    python -m bench.mixing [--quick] [--smoke] [--out FILE]

At 48 kHz / 128 frames (a 2.67 ms period), the budget is a cycle under 50% of the period:
- streamcore: a null-sink engine mixes N looping stereo buffer voices (each its own buffer,
  gain and pan set); the cycle time is the mixer's own per-cycle ``mix_ns`` (engine trace,
  p99).  N is searched (doubling, then bisection) up to the engine's voice limit; when the
  limit still fits, the capacity is also extrapolated from the time per voice at the limit
  (said so in the note).
- numpy: the same mixing as a sounddevice-style Python callback body (``out[:] = 0``; for each
  voice ``out += buffer[pos:pos+128] * gains``), called once per period in one thread at the
  same SCHED_FIFO priority (as root), timed per call (p99), N searched the same way.
- the mixer's bytes/s (voice bytes read per second of mixing, at the largest N measured)
  against memcpy bandwidth in this run (sc_memcpy_reference: chunks of one voice period,
  over a working set as large as the voices').
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.harness import Report, bench_main

RATE = 48000
BLOCK = 128
PERIOD_NS = BLOCK * 1_000_000_000 // RATE
BUDGET_NS = PERIOD_NS // 2
PRIORITY = 10  # the engine's default mixer priority
VOICE_FRAMES = RATE // 2  # each voice: its own half-second stereo buffer, looped


def _voice_buffers(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(8)
    return [(0.01 * rng.standard_normal((VOICE_FRAMES, 2))).astype(np.float32)
            for _ in range(n)]


def streamcore_cycle(buffers: list[np.ndarray], n: int, seconds: float) -> dict[str, Any]:
    """p99 and mean of the mixer's cycle time with ``n`` voices (ns)."""
    from streamcore import Engine
    from streamcore.profiling import TraceRecorder

    with Engine(samplerate=RATE, blocksize=BLOCK, sink="null") as e:
        for i in range(n):
            e.play(buffers[i], loop=True, gain=0.5, pan=(i % 9 - 4) / 8)
        time.sleep(0.15)
        recorder = TraceRecorder(e)
        recorder.poll()
        records = recorder.run(seconds, every=0.5)
        grant = str(e.grant)
    busy = records[records["voices"] == n]["mix_ns"]
    if len(busy) == 0:
        raise RuntimeError(f"no cycle mixed all {n} voices")
    return {"voices": n, "p99_ns": float(np.percentile(busy, 99)),
            "mean_ns": float(busy.mean()), "cycles": len(busy), "grant": grant}


def numpy_cycle(buffers: list[np.ndarray], n: int, calls: int) -> dict[str, Any]:
    """p99 and mean of a Python callback body mixing ``n`` voices in numpy (ns), called once
    per period like a callback, in a thread at the mixer's SCHED_FIFO priority when allowed (so
    both sides are measured without preemption by other load)."""
    result: dict[str, Any] = {}
    thread = threading.Thread(target=_numpy_thread, args=(buffers, n, calls, result))
    thread.start()
    thread.join()
    return result


def _numpy_thread(buffers, n: int, calls: int, result: dict[str, Any]) -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PRIORITY))  # this thread only
        result["policy"] = f"SCHED_FIFO {PRIORITY}"
    except OSError as e:
        result["policy"] = f"SCHED_OTHER ({e.strerror})"
    gains = [np.array([0.5 * (1 - p), 0.5 * (1 + p)], np.float32)
             for p in ((i % 9 - 4) / 8 for i in range(n))]
    out = np.zeros((BLOCK, 2), np.float32)
    times = np.empty(calls, np.int64)
    pos = 0
    clock = time.perf_counter_ns
    next_call = clock()
    for k in range(calls):
        t0 = clock()
        out[:] = 0
        for i in range(n):
            out += buffers[i][pos:pos + BLOCK] * gains[i]
        pos = (pos + BLOCK) % (VOICE_FRAMES - BLOCK)
        t1 = clock()
        times[k] = t1 - t0
        next_call += PERIOD_NS
        if next_call > t1:
            time.sleep((next_call - t1) / 1e9)
        else:
            next_call = t1  # late: skip, as a device would
    result.update(voices=n, p99_ns=float(np.percentile(times, 99)),
                  mean_ns=float(times.mean()), cycles=calls)


def largest_fitting(measure: Callable[[int], dict[str, Any]], limit: int,
                    tries: int) -> tuple[int, list[dict[str, Any]]]:
    """The largest N <= limit whose p99 is under the budget (0: not even one), searching by
    doubling then bisection with at most ``tries`` bisection steps; all measurements."""
    runs: list[dict[str, Any]] = []

    def fits(n: int) -> bool:
        r = measure(n)
        runs.append(r)
        return r["p99_ns"] < BUDGET_NS

    lo, hi = 0, None
    n = 1
    while n <= limit:
        if fits(n):
            lo = n
            if n == limit:
                return lo, runs
            n = min(2 * n, limit)
        else:
            hi = n
            break
    if hi is None:
        return lo, runs
    for _ in range(tries):
        if hi - lo <= 1:
            break
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, runs


def run(quick: bool = False, smoke: bool = False) -> Report:
    from bench.drivers import lib
    from streamcore.engine import MAX_VOICES

    report = Report("mixing", quick or smoke)
    seconds = 0.2 if smoke else 0.5 if quick else 1.5
    calls = 100 if smoke else 400 if quick else 750  # one per period: 0.27 / 1.1 / 2 s
    tries = 2 if smoke else 5 if quick else 8
    buffers = _voice_buffers(MAX_VOICES)
    sc_n, sc_runs = largest_fitting(lambda n: streamcore_cycle(buffers, n, seconds),
                                    MAX_VOICES, tries)
    np_limit = 16 * MAX_VOICES
    np_buffers = buffers * 16  # the same buffers again: numpy's N may go past the voice limit
    np_n, np_runs = largest_fitting(lambda n: numpy_cycle(np_buffers, n, calls), np_limit, tries)
    top = max(sc_runs, key=lambda r: r["voices"])
    per_voice_ns = top["p99_ns"] / top["voices"]
    note = f"p99 cycle under {BUDGET_NS / 1e3:.0f} µs (50% of {PERIOD_NS / 1e3:.0f} µs)"
    if sc_n == MAX_VOICES:
        note += (f"; the engine's voice limit ({MAX_VOICES}) fits: p99 {top['p99_ns'] / 1e3:.0f}"
                 f" µs; extrapolated capacity {BUDGET_NS / per_voice_ns:.0f} voices")
    report.add("stereo voices mixed in half a 128-frame period", sc_n, "voices",
               reference=("numpy mixing in a Python callback body", np_n),
               goal=None, note=note)
    report.add("stereo voices in half a period, extrapolated from the time per voice",
               BUDGET_NS / per_voice_ns, "voices",
               reference=("numpy, measured", np_n),
               note=f"{per_voice_ns:.0f} ns per voice (p99 at {top['voices']} voices)")
    # bandwidth at the largest N measured
    voice_bytes = top["voices"] * BLOCK * 2 * 4
    mixer_gbps = voice_bytes / top["mean_ns"]
    total = (32 if smoke else 256 if quick else 1024) << 20
    working_set = top["voices"] * VOICE_FRAMES * 2 * 4
    ns = lib.sc_memcpy_reference(total, BLOCK * 2 * 4, working_set)
    memcpy_error = f"sc_memcpy_reference failed: {ns}" if ns <= 0 else None
    memcpy_gbps = total / ns if ns > 0 else None
    report.add("mixer input bandwidth", mixer_gbps, "GB/s",
               reference=("memcpy, 1 KiB chunks over the same working set", memcpy_gbps),
               reference_error=memcpy_error,
               note=f"{top['voices']} voices x {BLOCK} frames x 8 B per mean cycle "
                    f"({top['mean_ns'] / 1e3:.0f} µs); the mixer also applies gain and pan")
    report.extra = {"budget_ns": BUDGET_NS, "period_ns": PERIOD_NS, "streamcore_runs": sc_runs,
                    "numpy_runs": np_runs, "voice_limit": MAX_VOICES,
                    "grant": sorted({r["grant"] for r in sc_runs}),
                    "memcpy": {"bytes": total, "ns": ns, "working_set": working_set}}
    report.machine["realtime"] = report.extra["grant"]  # how the mixer got (or missed) realtime
    return report


def main(argv: list[str] | None = None) -> int:
    return bench_main("mixing", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
