"""Memory: resident and locked bytes, and page faults taken by the realtime thread.

    python -m bench.memory [--quick] [--smoke] [--out FILE]

A fault in the mixer thread is a wait on the kernel's memory management inside a deadline; the
engine locks its rings and pre-touches what it reads, so the count during a run should be 0.
The run: a null-sink engine at 1 ms periods (the tightest the wake-up benchmark uses), eight
buffer voices and two stream voices that a Python thread keeps writing, under bench.load.
Figures: the mixer thread's minor and major faults during the run, the process's VmLck (and
the bytes of the rings the engine locks), and RSS before, during and after.
The same per-thread fault counts are taken for every player of bench.glitch (there against the
audio threads of python-sounddevice and rtmixer).

The helpers read /proc only: :func:`thread_faults`, :func:`process_memory`.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from bench.harness import Report, bench_main
from bench.load import Load

RATE = 48000


def thread_faults(tid: int) -> tuple[int, int]:
    """(minor, major) page faults of thread ``tid`` of this process so far ((0, 0) if gone)."""
    try:
        with open(f"/proc/self/task/{tid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0, 0
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces
    return int(fields[7]), int(fields[9])  # minflt, majflt (fields 10 and 12 of stat)


def faults_of(tids: list[int]) -> tuple[int, int]:
    minor = major = 0
    for tid in tids:
        a, b = thread_faults(tid)
        minor, major = minor + a, major + b
    return minor, major


def process_memory() -> dict[str, int]:
    """VmRSS, VmHWM, VmLck of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmLck"):
                out[key] = int(value.split()[0]) * 1024
    return out


def run(quick: bool = False, smoke: bool = False) -> Report:
    """One run of 20 s (quick 5 s, smoke 1 s)."""
    from streamcore import Engine

    seconds = 1.0 if smoke else 5.0 if quick else 20.0
    report = Report("memory", quick or smoke)
    before = process_memory()
    tone = (0.05 * np.sin(np.arange(RATE, dtype=np.float32) * 0.03)).astype(np.float32)
    stereo = np.repeat(tone[:, None], 2, axis=1)
    stop = threading.Event()
    with Load(enabled=True) as load, Engine(samplerate=RATE, blocksize=48, sink="null") as e:
        voices = [e.play(stereo if i % 2 else tone, loop=True, gain=0.1) for i in range(8)]
        streams = [e.stream(channels=1, frames=RATE // 4) for _ in range(2)]

        def feed() -> None:  # a normal Python producer: writes whatever room there is
            block = tone[:480]
            while not stop.is_set():
                for s in streams:
                    while s.ring.writable >= len(block):
                        s.write(block)
                time.sleep(0.002)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        time.sleep(0.2)
        start_faults = thread_faults(e.mixer_tid)
        during = process_memory()
        time.sleep(seconds)
        end_faults = thread_faults(e.mixer_tid)
        during_end = process_memory()
        stop.set()
        feeder.join()
        stats = e.stats()
        grant = str(e.grant)
        ring_bytes = [e.output.capacity * e.output.frame_bytes] + [
            s.ring.capacity * s.ring.frame_bytes for s in streams]
        del voices
    after = process_memory()
    minor, major = end_faults[0] - start_faults[0], end_faults[1] - start_faults[1]
    report.add("mixer thread minor page faults during the run", minor, "faults",
               higher_is_better=False, goal="0",
               note=f"{seconds:g} s, 1 ms periods, 8 buffer + 2 stream voices, "
                    f"{load.facts['load']}")
    report.add("mixer thread major page faults during the run", major, "faults",
               higher_is_better=False, goal="0")
    report.add("VmLck while running", during_end["VmLck"], "bytes",
               note=f"the rings' data: {sum(ring_bytes)} bytes, mapped twice (mirrored); the "
                    "rest: ring headers, thread stacks and pre-touched buffers the engine locks")
    report.add("VmRSS while running", during_end["VmRSS"], "bytes",
               reference=("VmRSS before the engine", before["VmRSS"]), higher_is_better=False)
    report.add("VmRSS growth during the run", during_end["VmRSS"] - during["VmRSS"], "bytes",
               higher_is_better=False, note="after start-up, while voices play and are fed")
    report.extra = {"seconds": seconds, "before": before, "running_start": during,
                    "running_end": during_end, "after": after, "ring_bytes": ring_bytes,
                    "grant": grant, "taints": sorted(stats.taints),
                    "xruns": stats.xruns, "underruns": stats.underruns, **load.facts}
    report.machine["realtime"] = [grant]  # how the mixer got (or missed) realtime
    return report


def main(argv: list[str] | None = None) -> int:
    return bench_main("memory", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
