"""Duplex: the round trip measured by streamcore against the host's nominal figure and
jack_iodelay, and input glitches under load against the tools users pick instead.

    python -m bench.duplex [--quick] [--smoke]

For JACK2 periods 64, 256 and 1024 (a dummy-backend server of its own per period,
bench.device._Jack):

- Latency: an Engine(input_channels=2) on the JACK device, PortAudio's outputs connected to
  its own inputs; ``measure_latency()`` repeated (5 times; smoke 2) gives the round trip and
  its spread; the host's nominal figure is what PortAudio reports for the stream (output
  plus input latency); jack_iodelay measures its own out->in loop on the same server.  Goal:
  streamcore's figure equals jack_iodelay's to the frame, with a spread of 0 frames.
- Input glitches: each player records the inputs for the same time under bench.load (a CPU
  hog per core and a Python thread churning allocations and gc in the recording process):
  streamcore (``Engine.record``: the C callback and the mixer, no Python), python-sounddevice
  (an InputStream whose Python callback copies each block into a buffer, and ``sd.playrec``,
  which does the same internally) and python-rtmixer (``Recorder.record_buffer``: a C
  callback).  A glitch is a server xrun during the window (JACK's xrun notices) or a block
  PortAudio flagged as an input overflow, whichever is more, plus for streamcore any frame
  the engine lost (capture gaps, recording overflows).  Goal: 0 where the references glitch.

PipeWire (quanta 64, 256 and 1024, a headless server each, the test suite's fixture as in
bench.glitch): the latency part only, in a child on pipewire-jack.  A PipeWire node's output
linked to its own input carries nothing (a cycle), so the loop goes through the null sink:
the engine's outputs play into it and its monitor feeds the engine's inputs; jack_iodelay
(pipewire-jack's) is looped the same way.  Input glitches under load on PipeWire are not
measured yet (they need pw-profiler's view per player, as bench.glitch has for playback).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.device import _Jack
from bench.harness import Report, bench_main
from bench.load import Load

RATE = 48000
PERIODS = (64, 256, 1024)
GOAL = "0 input glitches where the references glitch"
PLAYERS = ("streamcore (Engine.record)", "python-sounddevice (InputStream, Python callback)",
           "python-sounddevice (playrec)", "python-rtmixer (record_buffer)")


def _loop_back(jackd: _Jack, client: str) -> None:
    """Connect ``client``'s output ports to its own input ports (in order), cutting what fed
    the inputs."""
    import jack

    linker = jack.Client("bench-linker", servername=jackd.name, no_start_server=True)
    try:
        outs = sorted(p.name for p in linker.get_ports(f"{client}:", is_output=True))
        ins = sorted(p.name for p in linker.get_ports(f"{client}:", is_input=True))
        for port in ins:
            for source in linker.get_all_connections(port):
                linker.disconnect(source.name, port)
        for out, port in zip(outs, ins, strict=False):
            linker.connect(out, port)
    finally:
        linker.close()


def _iodelay(jackd: _Jack, seconds: float) -> dict[str, Any]:
    """jack_iodelay's round trips over ``seconds`` on its own out->in loop."""
    import jack

    iodelay = shutil.which("jack_iodelay")
    if iodelay is None:
        return {"error": "jack_iodelay not found (package jackd2)"}
    proc = subprocess.Popen(["stdbuf", "-oL", iodelay], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        linker = jack.Client("bench-iodelay-linker", servername=jackd.name,
                             no_start_server=True)
        try:
            deadline = time.monotonic() + 5
            while len(linker.get_ports("jack_delay:")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            linker.connect("jack_delay:out", "jack_delay:in")
            time.sleep(seconds)
        finally:
            linker.close()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=5)[0]
    figures = [float(m) for m in re.findall(r"([\d.]+) frames\s+[\d.]+ ms total roundtrip", out)]
    if not figures:
        return {"error": f"jack_iodelay printed no round trip: {out[-300:]!r}"}
    return {"frames": figures, "median": float(np.median(figures))}


def _latency(jackd: _Jack, repeats: int) -> dict[str, Any]:
    import streamcore
    from streamcore.sinks import portaudio
    from streamcore.sinks.device import DeviceSink

    with streamcore.Engine(samplerate=RATE, sink=DeviceSink(jackd.device),
                           input_channels=2) as engine:
        client = portaudio.jack_client_name()
        if client is None:
            return {"error": "PortAudio's JACK client has no name"}
        _loop_back(jackd, client)
        time.sleep(0.2)
        measured = [engine.measure_latency(0.5) for _ in range(repeats)]
    frames = [m.frames for m in measured]
    return {"frames": frames, "spread": max(frames) - min(frames),
            "fractions": [m.fraction for m in measured],
            "confidence": min(m.confidence for m in measured),
            "reported_frames": measured[-1].reported_frames}


def _window(jackd: _Jack, seconds: float, flagged: Callable[[], int]) -> dict[str, Any]:
    """Run ``seconds`` under load; the server's xruns and the flagged blocks during it."""
    x0, f0 = len(jackd.xruns), flagged()
    with Load(enabled=True) as load:
        time.sleep(seconds)
    xruns, flags = len(jackd.xruns) - x0, flagged() - f0
    return {"jack_xruns": xruns, "input_overflow_flags": flags,
            "glitches": max(xruns, flags), **load.facts}


def _streamcore(jackd: _Jack, seconds: float, blocksize: int) -> dict[str, Any]:
    import streamcore
    from streamcore.sinks.device import DeviceSink

    with streamcore.Engine(samplerate=RATE, blocksize=blocksize, sink=DeviceSink(jackd.device),
                           input_channels=2) as engine:
        time.sleep(0.5)
        recording = engine.record(int((seconds + 1) * RATE))

        def flags() -> int:
            return int(engine.stats().sink.get("input_overflow_flags") or 0)

        result = _window(jackd, seconds, flags)
        recording.stop()
        recording.wait(5)
        stats = engine.stats()
    lost = int(stats.input["input_gaps"]) + recording.overflows
    result.update(engine_lost=lost, glitches=result["glitches"] + lost,
                  grant=engine.grant.method if engine.grant else None)
    return result


def _sounddevice_stream(jackd: _Jack, seconds: float, blocksize: int) -> dict[str, Any]:
    import sounddevice as sd

    buffer = np.zeros((int((seconds + 2) * RATE), 2), np.float32)
    state = {"pos": 0, "flags": 0}

    def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        pos = state["pos"]
        n = min(frames, buffer.shape[0] - pos)
        buffer[pos:pos + n] = indata[:n]
        state["pos"] = pos + n
        if status.input_overflow:
            state["flags"] += 1

    with sd.InputStream(device=jackd.device, samplerate=RATE, blocksize=blocksize, channels=2,
                        dtype="float32", latency="low", callback=callback):
        time.sleep(0.5)
        return _window(jackd, seconds, lambda: state["flags"])


def _sounddevice_playrec(jackd: _Jack, seconds: float, blocksize: int) -> dict[str, Any]:
    import sounddevice as sd

    # playrec's stream has no callback of ours: its status (the flags of every block,
    # OR-ed) is all it tells; a server xrun is seen by JACK's notices.
    out = np.zeros((int((seconds + 0.5) * RATE), 2), np.float32)
    result: dict[str, Any] = {}

    def play() -> None:
        sd.playrec(out, samplerate=RATE, channels=2, device=jackd.device, blocksize=blocksize,
                   dtype="float32", latency="low", blocking=True)
        result["status"] = str(sd.get_status())

    thread = threading.Thread(target=play)
    thread.start()
    time.sleep(0.5)
    found = _window(jackd, seconds, lambda: 0)
    thread.join(seconds + 10)
    found["status"] = result.get("status")
    if "input overflow" in (result.get("status") or ""):
        found["glitches"] = max(found["glitches"], 1)
    return found


def _rtmixer(jackd: _Jack, seconds: float, blocksize: int) -> dict[str, Any]:
    try:
        import rtmixer
    except ImportError:
        return {"error": "rtmixer is not installed (pip install -e '.[bench]')"}
    buffer = np.zeros((int((seconds + 2) * RATE), 2), np.float32)
    with rtmixer.Recorder(device=jackd.device, channels=2, blocksize=blocksize,
                          samplerate=RATE) as recorder:
        action = recorder.record_buffer(buffer, channels=[1, 2])
        time.sleep(0.5)
        found = _window(jackd, seconds, lambda: 0)
        recorder.cancel(action)
        recorder.stop()
        # rtmixer's counters can only be read on a stopped stream: these include the
        # half-second warm-up before the window
        flags = int(recorder.stats.input_overflows)
    found.update(input_overflow_flags=flags, glitches=max(found["jack_xruns"], flags),
                 note="input-overflow flags counted from the start (warm-up included)")
    return found


_RECORDERS: dict[str, Callable[[_Jack, float, int], dict[str, Any]]] = dict(
    zip(PLAYERS, (_streamcore, _sounddevice_stream, _sounddevice_playrec, _rtmixer),
        strict=True))


def _guarded(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return run()
    except Exception as e:  # one failing player must not hide the others' figures
        return {"error": f"{type(e).__name__}: {e}"}


def _period_part(period: int, seconds: float, repeats: int) -> dict[str, Any]:
    jackd = _Jack(period)
    try:
        time.sleep(1.0)  # a dummy server just started xruns by itself for a moment
        part: dict[str, Any] = {"latency": _guarded(lambda: _latency(jackd, repeats)),
                                "jack_iodelay": _guarded(lambda: _iodelay(jackd, 2.0))}
        blocksize = min(period, 256)
        for name, record in _RECORDERS.items():
            part[name] = _guarded(lambda record=record: record(jackd, seconds, blocksize))
        return part
    finally:
        jackd.stop()


# The PipeWire latency child: the engine and jack_iodelay, each looped through the null sink.
_PIPEWIRE_LATENCY = """
    import json, re, subprocess, time
    import jack
    from streamcore import Engine
    from streamcore.sinks import portaudio
    from streamcore.sinks.device import DeviceSink

    sink, repeats = {sink!r}, {repeats}
    linker = jack.Client("bench-linker", no_start_server=True)
    result = {{}}
    with Engine(sink=DeviceSink(sink), input_channels=2) as engine:
        client = portaudio.jack_client_name()
        for channel, port in zip(("FL", "FR"), sorted(
                p.name for p in linker.get_ports(f"{{client}}:", is_input=True))):
            for source in linker.get_all_connections(port):
                linker.disconnect(source.name, port)
            linker.connect(f"{{sink}}:monitor_{{channel}}", port)
        time.sleep(0.3)
        measured = [engine.measure_latency(0.5) for _ in range(repeats)]
        result["frames"] = [m.frames for m in measured]
        result["reported_frames"] = measured[-1].reported_frames
        result["confidence"] = min(m.confidence for m in measured)
    proc = subprocess.Popen(["stdbuf", "-oL", "jack_iodelay"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 5
    while len(linker.get_ports("jack_delay:")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    linker.connect("jack_delay:out", f"{{sink}}:playback_FL")
    linker.connect(f"{{sink}}:monitor_FL", "jack_delay:in")
    time.sleep(2.0)
    proc.terminate()
    out = proc.communicate(timeout=5)[0]
    result["iodelay"] = [float(m) for m in re.findall(
        r"([\\d.]+) frames\\s+[\\d.]+ ms total roundtrip", out)]
    linker.close()
    print(json.dumps(result))
"""


def _pipewire_part(quanta: tuple[int, ...], repeats: int) -> dict[str, Any]:
    from bench.glitch import _pipewire_fixture, _pipewire_missing, _pipewire_version

    missing = _pipewire_missing()
    if missing:
        return {"missing": missing, "results": {}}
    fixture, failures = _pipewire_fixture()
    results: dict[str, Any] = {}
    for quantum in quanta:
        with tempfile.TemporaryDirectory(prefix="streamcore-bench-pw-") as tmp:
            try:
                server = fixture.start_pipewire(Path(tmp) / "pw", quantum=quantum)
            except failures as e:
                results[str(quantum)] = {"error": f"{type(e).__name__}: {e}"}
                continue
            try:
                results[str(quantum)] = _guarded(lambda server=server: server.run_child(
                    _PIPEWIRE_LATENCY.format(sink=server.sink_name, repeats=repeats),
                    via="jack", timeout=120))
            finally:
                server.stop()
    return {"missing": None, "version": _pipewire_version(), "results": results}


def _pipewire_figures(report: Report, part: dict[str, Any]) -> None:
    if part["missing"]:
        report.add("PipeWire: round trip measured by streamcore", None, "frames",
                   note=f"not measured: {part['missing']}")
        return
    for quantum, row in part["results"].items():
        where = f"PipeWire quantum {quantum}, looped through the null sink's monitor"
        frames = row.get("frames")
        iodelay = row.get("iodelay")
        report.add(f"{where}: round trip measured by streamcore (median of "
                   f"{len(frames or [])})", None if not frames else float(np.median(frames)),
                   "frames", reference=("jack_iodelay (pipewire-jack)",
                                        float(np.median(iodelay)) if iodelay else None),
                   reference_error=row.get("error") or (
                       None if iodelay else "jack_iodelay printed no round trip"),
                   higher_is_better=False, goal="equal to jack_iodelay's, to the frame",
                   note=row.get("error"))
        report.add(f"{where}: spread of streamcore's round trip over repeats",
                   None if not frames else max(frames) - min(frames), "frames",
                   higher_is_better=False, goal="0 frames", note=row.get("error"))


def _figures(report: Report, period: int, part: dict[str, Any], seconds: float) -> None:
    where = f"JACK2 period {period}"
    ours, iodelay = part["latency"], part["jack_iodelay"]
    measured = None if "error" in ours else float(np.median(ours["frames"]))
    repeats = len(ours.get("frames", []))
    report.add(f"{where}: round trip measured by streamcore (median of {repeats})",
               measured, "frames", reference=("jack_iodelay", iodelay.get("median")),
               reference_error=iodelay.get("error"), higher_is_better=False,
               goal="equal to jack_iodelay's, to the frame", note=ours.get("error"))
    report.add(f"{where}: spread of streamcore's round trip over repeats",
               ours.get("spread"), "frames", higher_is_better=False, goal="0 frames",
               note=ours.get("error"))
    report.add(f"{where}: the host's nominal round trip (PortAudio's figures)",
               ours.get("reported_frames"), "frames",
               reference=("streamcore measured", measured), higher_is_better=False,
               note="what PortAudio reports for the duplex stream: output plus input latency")
    ref_names = PLAYERS[1:]
    mine = part[PLAYERS[0]]
    for name in ref_names:
        ref = part[name]
        report.add(f"{where}: input glitches recording {seconds:g} s under load (vs "
                   f"{name.split(' (')[0]} {name.split(' (')[1].rstrip(')')})",
                   mine.get("glitches"), "glitches", reference=(name, ref.get("glitches")),
                   reference_error=ref.get("error"), higher_is_better=False, goal=GOAL,
                   note=mine.get("error") or "max(JACK xruns, input-overflow flags) + "
                                             "frames the engine lost")


def run(quick: bool = False, smoke: bool = False) -> Report:
    """Each period: latency (5 repeats; smoke 2) and each recorder for 30 s under load
    (quick 5 s; smoke 1 s and period 256 only)."""
    seconds = 1.0 if smoke else 5.0 if quick else 30.0
    periods = (256,) if smoke else PERIODS
    repeats = 2 if smoke else 5
    report = Report("duplex", quick or smoke)
    parts = {}
    for period in periods:
        parts[str(period)] = _period_part(period, seconds, repeats)
        _figures(report, period, parts[str(period)], seconds)
    pipewire = _pipewire_part(periods, repeats)
    _pipewire_figures(report, pipewire)
    report.extra = {"seconds": seconds, "samplerate": RATE, "periods": list(periods),
                    "results": parts, "pipewire": pipewire}
    return report


def main(args: list[str] | None = None) -> int:
    return bench_main("duplex", run, __doc__.splitlines()[0], args)


if __name__ == "__main__":
    raise SystemExit(main())
