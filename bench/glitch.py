"""Glitch resistance: streamcore against the tools users pick instead, on the same device and
under the same load.

    python -m bench.glitch [--quick] [--smoke] [--out FILE]

For blocksizes 64, 128 and 256 it starts its own JACK server (dummy backend, 48 kHz, period =
blocksize; bench.device._Jack) and plays the same four stereo buffers, mixed, for the same
duration under bench.load (a CPU hog per core + a Python allocation/gc churn thread in this
process), with each of:

- streamcore: an Engine on the DeviceSink (C callback), the four buffers as voices;
- python-sounddevice: an OutputStream whose Python callback mixes the four buffers in numpy;
- python-rtmixer (PyPI rtmixer): a Mixer playing the four buffers (play_buffer), its C
  callback mixing them.

Glitches counted in each window: JACK's xrun notices (a client that did not finish its cycle in
time is one) or PortAudio's output-underflow flags, whichever is more (PortAudio's JACK host
API passes server xruns on as that flag, so one dropout is counted once, not twice) and, for
streamcore, periods its output ring was short (ring underruns). Also recorded: the page faults
of the audio threads during the window (bench.memory.thread_faults) and the realtime grant. A
window with no client playing gives JACK's own xruns under the load: the noise floor every
player shares; a window with only jack_metro (JACK's minimal C example client) playing gives
the floor for any client, as each player adds a client process to JACK's cycle. Goal: zero for
streamcore where the others are non-zero.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.harness import Report, bench_main
from bench.load import Load
from bench.memory import faults_of, process_memory

RATE = 48000
BLOCKSIZES = (64, 128, 256)
FLOOR_CLIENT = "JACK with jack_metro (a minimal C client)"
VOICES = 4
WARMUP = 0.5


def _buffers(seconds: float) -> list[np.ndarray]:
    """VOICES stereo float32 buffers of ``seconds`` + margin, pre-scaled so their sum stays
    within [-1, 1] (rtmixer has no gain: every player plays them at gain 1)."""
    frames = int((seconds + WARMUP + 2) * RATE)
    t = np.arange(frames, dtype=np.float32) / RATE
    out = []
    for i in range(VOICES):
        tone = (0.9 / VOICES) * np.sin(2 * np.pi * (220 + 110 * i) * t, dtype=np.float32)
        out.append(np.ascontiguousarray(np.stack([tone, tone[::-1]], axis=1)))
    return out


def _glitches(underflows: int, xruns: int, ring_underruns: int = 0) -> int:
    """Dropouts in a window: a server xrun reaches the client as an underflow flag as well,
    so the larger of the two counts, plus the periods the player's own ring was short."""
    return max(underflows, xruns) + ring_underruns


class _Target:
    """Where a player plays: the PortAudio output device, the server's xrun notices so far (a
    list that grows; JACK2 only, PipeWire sends clients none) and what ends the warm-up."""

    def __init__(self, device: int, xruns: list[float],
                 ready: Callable[[], None] | None = None) -> None:
        self.device = device
        self.xruns = xruns
        self._ready = ready

    def warm_up(self) -> None:
        """Let the player settle for WARMUP seconds, then tell whoever waits that the window
        under load may begin (a PipeWire child: the parent starts the profiler first)."""
        time.sleep(WARMUP)
        if self._ready is not None:
            self._ready()


def _delta(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else after - before


def _realtime_tids() -> list[int]:
    """This process's threads that run a realtime policy (the JACK client's threads, when no
    engine runs)."""
    tids = []
    for name in os.listdir("/proc/self/task"):
        try:
            if os.sched_getscheduler(int(name)) in (os.SCHED_FIFO, os.SCHED_RR):
                tids.append(int(name))
        except OSError:  # the thread ended meanwhile
            pass
    return tids


def _streamcore(target: _Target, buffers, seconds: float, blocksize: int) -> dict[str, Any]:
    from streamcore import Engine
    from streamcore.sinks.device import DeviceSink

    with Engine(samplerate=RATE, blocksize=blocksize,
                sink=DeviceSink(target.device)) as engine:
        for b in buffers:
            engine.play(b)
        target.warm_up()
        before, x0 = engine.stats(), len(target.xruns)
        tids = [engine.mixer_tid, before.sink.get("callback_tid", 0)]
        f0 = faults_of(tids)
        with Load(enabled=True) as load:
            time.sleep(seconds)
        after, x1 = engine.stats(), len(target.xruns)
        f1 = faults_of(tids)
        grant = str(engine.grant)
    s, s0 = after.sink, before.sink
    underflows = s["output_underflows"] - s0["output_underflows"]
    ring = s["underruns"] - s0["underruns"]
    g0 = before.glitches
    return {"glitches": _glitches(underflows, x1 - x0, ring), "output_underflows": underflows,
            "ring_underruns": ring, "jack_xruns": x1 - x0,
            "callbacks": s["callbacks"] - s0["callbacks"],
            "engine_xruns": after.xruns - before.xruns,
            # what the engine itself counted in the window (stats().glitches by place, the
            # stream-voice underruns, the server's xrun notices to its own JACK client: 0
            # under PipeWire, which sends clients none)
            "engine_glitches": {k: v - g0.get(k, 0) for k, v in after.glitches.items()},
            "engine_underruns": after.underruns - before.underruns,
            "server_xruns": _delta(s.get("server_xruns"), s0.get("server_xruns")),
            "host_period": s.get("host_period"), "jack_version": s.get("jack_version"),
            "faults_minor": f1[0] - f0[0], "faults_major": f1[1] - f0[1],
            "fault_threads": "mixer + PortAudio callback thread", "grant": grant,
            "taints": sorted(after.taints), **load.facts}


def _sounddevice(target: _Target, buffers, seconds: float, blocksize: int) -> dict[str, Any]:
    import sounddevice as sd

    state = {"pos": 0, "callbacks": 0, "underflows": 0, "tid": 0}
    total = len(buffers[0])

    def callback(outdata, frames, time_info, status) -> None:
        state["tid"] = threading.get_native_id()
        pos = state["pos"]
        n = min(frames, total - pos)
        mix = buffers[0][pos:pos + n].copy()
        for b in buffers[1:]:
            mix += b[pos:pos + n]
        outdata[:n] = mix
        outdata[n:] = 0
        state["pos"] = pos + n
        state["callbacks"] += 1
        if status.output_underflow:
            state["underflows"] += 1

    with sd.OutputStream(device=target.device, samplerate=RATE, blocksize=blocksize, channels=2,
                         dtype="float32", latency="low", callback=callback):
        target.warm_up()
        c0, u0, x0 = state["callbacks"], state["underflows"], len(target.xruns)
        tids = [state["tid"]]
        f0 = faults_of(tids)
        with Load(enabled=True) as load:
            time.sleep(seconds)
        c1, u1, x1 = state["callbacks"], state["underflows"], len(target.xruns)
        f1 = faults_of(tids)
    return {"glitches": _glitches(u1 - u0, x1 - x0), "output_underflows": u1 - u0,
            "jack_xruns": x1 - x0, "callbacks": c1 - c0,
            "faults_minor": f1[0] - f0[0], "faults_major": f1[1] - f0[1],
            "fault_threads": "the PortAudio callback thread (runs the Python callback)",
            "grant": "JACK's client thread (the server's realtime settings)", **load.facts}


def _rtmixer(target: _Target, buffers, seconds: float, blocksize: int) -> dict[str, Any]:
    import rtmixer

    with rtmixer.Mixer(device=target.device, channels=2, blocksize=blocksize, samplerate=RATE,
                       latency="low") as mixer:
        for b in buffers:
            mixer.play_buffer(b, channels=[1, 2])
        target.warm_up()
        reset = mixer.fetch_and_reset_stats()
        mixer.wait(reset)
        x0 = len(target.xruns)
        tids = _realtime_tids()
        f0 = faults_of(tids)
        with Load(enabled=True) as load:
            time.sleep(seconds)
        fetch = mixer.fetch_and_reset_stats()
        mixer.wait(fetch)
        x1 = len(target.xruns)
        f1 = faults_of(tids)
        st = fetch.stats
        underflows, blocks = int(st.output_underflows), int(st.blocks)
    return {"glitches": _glitches(underflows, x1 - x0), "output_underflows": underflows,
            "jack_xruns": x1 - x0, "callbacks": blocks,
            "faults_minor": f1[0] - f0[0], "faults_major": f1[1] - f0[1],
            "fault_threads": f"the process's {len(tids)} realtime threads (JACK client threads)",
            "grant": "JACK's client thread (the server's realtime settings)", **load.facts}


def _jack_with_c_client(jackd, seconds: float) -> dict[str, Any]:
    """JACK's xruns under the same load with one minimal C client playing (jack_metro, from
    JACK's own example clients, its port connected to the device): the floor for any client,
    as every player adds a client process to JACK's cycle."""
    exe = shutil.which("jack_metro")
    if exe is None:
        raise RuntimeError("jack_metro not found (it comes with jackd2)")
    name = f"bench-metro-{os.getpid()}"
    proc = subprocess.Popen([exe, "-n", name, "-b", "120"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (ports := jackd.watch.get_ports(f"{name}:", is_output=True)):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("jack_metro did not register its port")
            time.sleep(0.05)
        for playback in jackd.watch.get_ports("system:", is_input=True, is_audio=True)[:2]:
            jackd.watch.connect(ports[0], playback)
        time.sleep(WARMUP)
        x0 = len(jackd.xruns)
        with Load(enabled=True) as load:
            time.sleep(seconds)
        x1 = len(jackd.xruns)
    finally:
        proc.terminate()
        proc.wait(10)
    return {"glitches": x1 - x0, "jack_xruns": x1 - x0, "seconds": seconds, **load.facts}


def _jack_alone(jackd, buffers, seconds: float, blocksize: int) -> dict[str, Any]:
    """No client playing: JACK's own xruns under the same load (the machine's noise floor)."""
    x0 = len(jackd.xruns)
    with Load(enabled=True) as load:
        time.sleep(seconds)
    return {"glitches": len(jackd.xruns) - x0, "jack_xruns": len(jackd.xruns) - x0,
            **load.facts}


PLAYERS = {"streamcore": _streamcore, "python-sounddevice (numpy mix in a Python callback)":
           _sounddevice, "python-rtmixer": _rtmixer}


def run(quick: bool = False, smoke: bool = False) -> Report:
    """60 s per player and blocksize (quick 4 s; smoke 1 s, blocksize 256 only), up to 10 s
    with no client playing (JACK's own xruns under the load: the noise floor) and up to 20 s
    with only jack_metro playing (the floor for any client)."""
    from bench.device import _Jack

    seconds = 1.0 if smoke else 4.0 if quick else 60.0
    blocksizes = (256,) if smoke else BLOCKSIZES
    report = Report("glitch", quick or smoke)
    buffers = _buffers(seconds)
    results: dict[str, dict[str, Any]] = {}
    for blocksize in blocksizes:
        jackd = _Jack(blocksize)
        try:
            row = {"JACK alone (noise floor)": _jack_alone(jackd, buffers, min(seconds, 10.0),
                                                            blocksize)}
            try:
                row[FLOOR_CLIENT] = _jack_with_c_client(jackd, min(seconds, 20.0))
            except Exception as e:  # reported as missing, the players still run
                row[FLOOR_CLIENT] = {"error": f"{type(e).__name__}: {e}"}
            for name, player in PLAYERS.items():
                started = time.monotonic()
                try:
                    row[name] = player(_Target(jackd.device, jackd.xruns), buffers, seconds,
                                       blocksize)
                except Exception as e:  # a missing peer refuses its ratio, it does not abort
                    row[name] = {"error": f"{type(e).__name__}: {e}"}
                row[name]["elapsed_s"] = round(time.monotonic() - started, 1)
        finally:
            jackd.stop()
        results[str(blocksize)] = row
        ours = row["streamcore"]
        where = f"blocksize {blocksize}, {seconds:g} s under load"
        expected = seconds * RATE / blocksize
        for name in list(PLAYERS)[1:]:
            ref = row[name]
            report.add(f"glitches, {where} (vs {name.split(' ')[0]})", ours.get("glitches"),
                       "glitches", reference=(name, ref.get("glitches")),
                       reference_error=ref.get("error"), higher_is_better=False,
                       goal="0 where the reference is > 0", note=ours.get("error") or (
                           f"max(underflows, JACK xruns) + ring underruns; periods expected "
                           f"{expected:.0f}, callbacks ran {ours.get('callbacks')}"))
        report.add(f"JACK's own xruns with no client playing, blocksize {blocksize}, "
                   f"{min(seconds, 10.0):g} s under load",
                   row["JACK alone (noise floor)"]["glitches"], "xruns", higher_is_better=False,
                   note=f"the noise floor: what the server and the load cause alone, in "
                        f"{min(seconds, 10.0):g} s")
        floor = row[FLOOR_CLIENT]
        report.add(f"JACK's xruns with one minimal C client (jack_metro) playing, blocksize "
                   f"{blocksize}, {min(seconds, 20.0):g} s under load",
                   floor.get("glitches"), "xruns", higher_is_better=False,
                   note=floor.get("error") or (
                       f"the floor for any client (JACK's own example client), in "
                       f"{floor['seconds']:g} s"))
        report.add(f"audio-thread page faults, {where}", ours.get("faults_minor"), "faults",
                   reference=("python-sounddevice callback thread",
                              row[list(PLAYERS)[1]].get("faults_minor")),
                   reference_error=row[list(PLAYERS)[1]].get("error"), higher_is_better=False,
                   note=ours.get("error") or ours.get("fault_threads"))
    report.extra = {"seconds": seconds, "samplerate": RATE, "voices": VOICES,
                    "memory_after": process_memory(), "results": results,
                    "grant": sorted({r["streamcore"].get("grant", "?")
                                     for r in results.values()})}
    report.machine["realtime"] = report.extra["grant"]  # how the mixer got (or missed) realtime
    return report


def main(argv: list[str] | None = None) -> int:
    return bench_main("glitch", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
