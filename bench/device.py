"""Device sink under a GIL-hogging Python load, against a Python-callback sounddevice stream.

    python -m bench.device [--quick] [--seconds S] [--blocksize N] [--out FILE]

(not in ``python -m bench``'s default list: it needs jackd, which it starts itself)

Starts its own JACK server (dummy backend, 48 kHz, period = blocksize), then for the same
duration and the same load (the main thread spins in pure Python holding the GIL and calls
gc.collect() over and over) plays through:

- streamcore's DeviceSink (the C callback; the mixer renders a looping buffer), with the
  mixer placed below the audio thread's priority (the default) and left above it, and
- the reference: a sounddevice OutputStream whose Python callback copies one block,

counting PortAudio's output-underflow flags, the callbacks that ran, the callback durations,
and JACK's own xrun notices in each window (the machine's noise floor for both).
"""

from __future__ import annotations

import argparse
import gc
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from typing import Any

import numpy as np

from bench.harness import RESULTS, Report

RATE = 48000


def _hog(seconds: float) -> int:
    """Hold the GIL in a tight loop with gc.collect() for ``seconds``; returns collections."""
    junk: list[list[int]] = []
    collections = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(20000):
            junk.append([1])
        junk.clear()
        gc.collect()
        collections += 1
    return collections


class _Jack:
    def __init__(self, period: int) -> None:
        import jack
        import sounddevice as sd

        self.name = f"streamcore-bench-{os.getpid()}"
        os.environ["JACK_DEFAULT_SERVER"] = self.name
        os.environ["JACK_NO_AUDIO_RESERVATION"] = "1"
        jackd = shutil.which("jackd", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        if jackd is None:
            raise RuntimeError("jackd not found: apt-get install --no-install-recommends jackd2")
        fd, self.log = tempfile.mkstemp(prefix="jackd-", suffix=".log")
        self.proc = subprocess.Popen(
            [jackd, "--name", self.name, "-d", "dummy", "-r", str(RATE), "-p", str(period)],
            stdout=fd, stderr=subprocess.STDOUT, start_new_session=True)
        os.close(fd)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.watch = jack.Client("bench-xrun-watch", servername=self.name,
                                         no_start_server=True)
                break
            except jack.JackError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"jackd did not start (log: {self.log})") from None
                time.sleep(0.1)
        self.xruns: list[float] = []
        self.watch.set_xrun_callback(self.xruns.append)
        self.watch.activate()
        sd._terminate()
        sd._initialize()
        self.device = next(i for i, d in enumerate(sd.query_devices())
                           if "JACK" in sd.query_hostapis(d["hostapi"])["name"]
                           and d["max_output_channels"] > 0)

    def stop(self) -> None:
        import sounddevice as sd

        self.watch.deactivate()
        self.watch.close()
        sd._terminate()  # before the server goes, or PortAudio's JACK host API aborts
        self.proc.terminate()
        self.proc.wait(10)
        sd._initialize()


def _streamcore(jackd: _Jack, seconds: float, blocksize: int,
                below: bool) -> dict[str, Any]:
    import streamcore
    from streamcore.sinks.device import DeviceSink

    sink = DeviceSink(jackd.device, mixer_below_callback=below)
    with streamcore.Engine(samplerate=RATE, blocksize=blocksize, sink=sink) as engine:
        engine.play(np.full((4800, 2), 0.1, np.float32), loop=True)
        time.sleep(0.5)
        before, xruns0 = engine.stats(), len(jackd.xruns)
        _hog(seconds)
        after = engine.stats()
    s, s0 = after.sink, before.sink
    return {"callbacks": s["callbacks"] - s0["callbacks"],
            "output_underflows": s["output_underflows"] - s0["output_underflows"],
            "ring_underruns": s["underruns"] - s0["underruns"],
            "engine_xruns": after.xruns - before.xruns,
            "jack_xruns": len(jackd.xruns) - xruns0,
            "callback_us_max": s["callback_ns"]["max"] / 1e3,
            "callback_us_mean": s["callback_ns"]["mean"] / 1e3,
            "callback_thread": [s["callback_policy"], s["callback_priority"]],
            "mixer_priority": engine.priority, "mixer_moved": s["mixer_moved"],
            "mix_us_max": after.mix_time.max_ns / 1e3}


def _python_callback(jackd: _Jack, seconds: float, blocksize: int) -> dict[str, Any]:
    import sounddevice as sd

    block = np.full((blocksize, 2), 0.1, np.float32)
    counts = {"callbacks": 0, "output_underflows": 0}
    durations: list[float] = []

    def callback(outdata, frames, time_info, status) -> None:
        t0 = time.perf_counter()
        outdata[:] = block[:frames]
        counts["callbacks"] += 1
        if status.output_underflow:
            counts["output_underflows"] += 1
        durations.append(time.perf_counter() - t0)

    with sd.OutputStream(device=jackd.device, samplerate=RATE, blocksize=blocksize,
                         channels=2, dtype="float32", latency="low", callback=callback):
        time.sleep(0.5)
        c0, u0, x0, d0 = (counts["callbacks"], counts["output_underflows"],
                          len(jackd.xruns), len(durations))
        _hog(seconds)
        c1, u1, x1 = counts["callbacks"], counts["output_underflows"], len(jackd.xruns)
    window = durations[d0:]
    return {"callbacks": c1 - c0, "output_underflows": u1 - u0, "jack_xruns": x1 - x0,
            "callback_us_max": max(window) * 1e6 if window else None,
            "callback_us_mean": float(np.mean(window)) * 1e6 if window else None}


def run(quick: bool = False, smoke: bool = False, seconds: float | None = None,
        blocksize: int = 256) -> Report:
    """Measure each side for ``seconds`` (30; quick 10; smoke 1) under the same load."""
    seconds = seconds or (1.0 if smoke else 10.0 if quick else 30.0)
    report = Report("device", quick or smoke)
    jackd = _Jack(blocksize)
    try:
        ours = _streamcore(jackd, seconds, blocksize, below=True)
        above = _streamcore(jackd, seconds, blocksize, below=False)
        reference = _python_callback(jackd, seconds, blocksize)
    finally:
        jackd.stop()
    load = f"{seconds:g} s, blocksize {blocksize}, main thread spinning with the GIL + gc"
    report.add("callbacks that ran (C callback)", ours["callbacks"], "callbacks",
               reference=("sounddevice Python callback", reference["callbacks"]),
               note=f"{load}; expected {seconds * RATE / blocksize:.0f}")
    report.add("PortAudio output underflows (C callback)", ours["output_underflows"], "flags",
               reference=("sounddevice Python callback", reference["output_underflows"]),
               higher_is_better=False, goal="0", note=load)
    report.add("callback duration max (C callback)", ours["callback_us_max"], "µs",
               reference=("sounddevice Python callback", reference["callback_us_max"]),
               higher_is_better=False, note=load)
    report.add("callback duration max, mixer left above the audio thread",
               above["callback_us_max"], "µs",
               reference=("mixer placed below it (the default)", ours["callback_us_max"]),
               higher_is_better=False, note=load)
    report.add("PortAudio output underflows, mixer left above the audio thread",
               above["output_underflows"], "flags",
               reference=("mixer placed below it (the default)", ours["output_underflows"]),
               higher_is_better=False, note=load)
    report.extra.update({"seconds": seconds, "blocksize": blocksize, "samplerate": RATE,
                         "streamcore_c_callback": ours,
                         "streamcore_mixer_above_callback": above,
                         "sounddevice_python_callback": reference})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s per side instead of 30 s")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--blocksize", type=int, default=256)
    parser.add_argument("--out", default=str(RESULTS / "device.json"))
    args = parser.parse_args(argv)
    report = run(args.quick, seconds=args.seconds, blocksize=args.blocksize)
    path = report.write_json(pathlib.Path(args.out))
    for f in report.figures:
        ratio = f"{f.ratio:.3g}x {f.reference_name}" if f.ratio is not None else ""
        print(f"{f.name}: {f.value} {f.unit} (reference {f.reference_value}; {ratio})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
