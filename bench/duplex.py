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
  callback).  A glitch is a server xrun during the window (JACK's xrun notices), a block
  PortAudio flagged as an input overflow or a block the recorder never received (its frames
  counted against the window's length; not known for playrec and rtmixer), whichever is
  more, plus for streamcore any frame the engine lost (capture gaps, recording overflows).
  Goal: 0 where the references glitch.

PipeWire (quanta 64, 256 and 1024, a headless server each, the test suite's fixture as in
bench.glitch): the latency part only, in a child on pipewire-jack.  A PipeWire node's output
linked to its own input carries nothing (a cycle), so the loop goes through the null sink:
the engine's outputs play into it and its monitor feeds the engine's inputs; jack_iodelay
(pipewire-jack's) is looped the same way.  Input glitches under load (not in the smoke form):
the same recorders, each in a child on pipewire-jack recording the null sink's monitor
(PortAudio's JACK host connects its inputs there itself), with the same load.  PipeWire tells
clients of no xrun: the server's glitches are the cycles in which a running node missed, read
from pw-profiler by streamcore's own ProfilerWatch (streamcore.sinks.pipewire) over the
window, plus each recorder's input-overflow flags and, for streamcore, the frames the engine
lost, as on JACK2.
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
from typing import Any, TypeAlias

import numpy as np

from bench.device import _Jack
from bench.harness import Report, bench_main
from bench.load import Load

RATE = 48000
PERIODS = (64, 256, 1024)
GOAL = "0 input glitches where the references glitch"
#: Where a recorder records: a JACK2 server of the bench's own, or PipeWire from a child.
_Target: TypeAlias = "_Jack | _PipeWireTarget"
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


def _window(jackd: _Target, seconds: float, flagged: Callable[[], int]) -> dict[str, Any]:
    """Run ``seconds`` under load; the server's xruns and the flagged blocks during it (a
    target whose xruns are reported late is waited for: ``report_lag`` seconds)."""
    x0, f0 = len(jackd.xruns), flagged()
    with Load(enabled=True) as load:
        time.sleep(seconds)
    time.sleep(getattr(jackd, "report_lag", 0.0))
    xruns, flags = len(jackd.xruns) - x0, flagged() - f0
    return {"jack_xruns": xruns, "input_overflow_flags": flags,
            "glitches": max(xruns, flags), **load.facts}


def _received(found: dict[str, Any], frames: int, elapsed: float, blocksize: int) -> None:
    """Add to a window's figures the frames the recorder received in ``elapsed`` seconds and
    the blocks it never got: a recorder called back less often than the device runs loses
    them whether or not the server counted an xrun (python-sounddevice's Python callback on
    JACK2 under the load: 11264 frames in a 1 s window, no xrun).  Those blocks are glitches
    too (the larger of the two counts: a missed cycle is also a missing block).  Slack: two
    blocks and 1% for the window's edges and the device's clock.  A recorder that received
    nothing measured nothing: an error, not 0."""
    if frames <= 0:
        raise RuntimeError(f"the recorder received no frame in {elapsed:.1f} s: its inputs "
                           f"did not run")
    expected = elapsed * RATE
    missing = max(0.0, expected * 0.99 - 2 * blocksize - frames)
    found.update(frames_received=frames, frames_expected=round(expected),
                 blocks_missing=int(missing // blocksize))
    found["glitches"] = max(found["glitches"], found["blocks_missing"])


class _PipeWireTarget:
    """A recorder's server on PipeWire, from inside a child on pipewire-jack: the device (the
    one PortAudio's JACK host lists, named after the null sink) and the server's glitches as
    a list that grows (``len``): the cycles in which a running node missed, from pw-profiler,
    whose data comes once a second (``report_lag``)."""

    report_lag = 1.5

    def __init__(self, sink: str) -> None:
        from streamcore.sinks.pipewire import ProfilerWatch

        self.device = sink
        self._watch = ProfilerWatch()

    @property
    def xruns(self) -> range:
        return range(self._watch.poll().glitches)

    def close(self) -> None:
        self._watch.close()


def pipewire_recorder(name: str, sink: str, seconds: float, blocksize: int) -> dict[str, Any]:
    """In a child on pipewire-jack: recorder ``name`` (one of :data:`PLAYERS`) under load on
    the null sink's monitor; its figures, or its error."""
    target = _PipeWireTarget(sink)
    try:
        return _guarded(lambda: _RECORDERS[name](target, seconds, blocksize))
    finally:
        target.close()


def _streamcore(jackd: _Target, seconds: float, blocksize: int) -> dict[str, Any]:
    import streamcore
    from streamcore.sinks.device import DeviceSink

    with streamcore.Engine(samplerate=RATE, blocksize=blocksize, sink=DeviceSink(jackd.device),
                           input_channels=2) as engine:
        time.sleep(0.5)
        recording = engine.record(int((seconds + 1) * RATE))

        def flags() -> int:
            return int(engine.stats().sink.get("input_overflow_flags") or 0)

        first, began = engine.input_frame, time.monotonic()
        result = _window(jackd, seconds, flags)
        _received(result, engine.input_frame - first, time.monotonic() - began, blocksize)
        recording.stop()
        recording.wait(5)
        stats = engine.stats()
    lost = int(stats.input["input_gaps"]) + recording.overflows
    result.update(engine_lost=lost, glitches=result["glitches"] + lost,
                  grant=engine.grant.method if engine.grant else None)
    return result


def _sounddevice_stream(jackd: _Target, seconds: float, blocksize: int) -> dict[str, Any]:
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
        first, began = state["pos"], time.monotonic()
        found = _window(jackd, seconds, lambda: state["flags"])
        _received(found, state["pos"] - first, time.monotonic() - began, blocksize)
        return found


def _sounddevice_playrec(jackd: _Target, seconds: float, blocksize: int) -> dict[str, Any]:
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
    if thread.is_alive():
        raise RuntimeError("playrec did not return: its stream never ran")
    found["status"] = result.get("status")
    if "input overflow" in (result.get("status") or ""):
        found["glitches"] = max(found["glitches"], 1)
    return found


def _rtmixer(jackd: _Target, seconds: float, blocksize: int) -> dict[str, Any]:
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


_RECORDERS: dict[str, Callable[[_Target, float, int], dict[str, Any]]] = dict(
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


# A recorder's child: one of PLAYERS under load, its figures as JSON.
_PIPEWIRE_RECORDER = """
    import json
    from bench.duplex import pipewire_recorder
    print(json.dumps(pipewire_recorder({name!r}, {sink!r}, {seconds!r}, {blocksize})))
"""


def _pipewire_recording(server: Any, name: str, seconds: float, blocksize: int) -> dict[str, Any]:
    """Recorder ``name`` in a child on ``server``'s pipewire-jack: its figures or error."""
    code = _PIPEWIRE_RECORDER.format(name=name, sink=server.sink_name, seconds=seconds,
                                     blocksize=blocksize)
    return _guarded(lambda: server.run_child(code, via="jack", timeout=seconds + 90))


def _pipewire_part(quanta: tuple[int, ...], repeats: int, seconds: float,
                   recorders: bool = True) -> dict[str, Any]:
    """The latency child and (``recorders``) each recorder's child, per quantum."""
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
                row = _guarded(lambda server=server: server.run_child(
                    _PIPEWIRE_LATENCY.format(sink=server.sink_name, repeats=repeats),
                    via="jack", timeout=120))
                for name in PLAYERS if recorders else ():
                    row[name] = _pipewire_recording(server, name, seconds, min(quantum, 256))
                results[str(quantum)] = row
            finally:
                server.stop()
    return {"missing": None, "version": _pipewire_version(), "results": results}


def _pipewire_figures(report: Report, part: dict[str, Any], seconds: float) -> None:
    if part["missing"]:
        report.add("PipeWire: round trip measured by streamcore", None, "frames",
                   note=f"not measured: {part['missing']}")
        _glitch_figures(report, "PipeWire", {"error": f"not measured: {part['missing']}"},
                        seconds, "")
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
        if not any(name in row for name in PLAYERS):
            continue  # the smoke form runs no recorder on PipeWire
        _glitch_figures(report, f"PipeWire quantum {quantum}", row, seconds,
                        "max(profiler's missed cycles, input-overflow flags, blocks never "
                        "received) + frames the engine lost")


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
    _glitch_figures(report, where, part, seconds,
                    "max(JACK xruns, input-overflow flags, blocks never received) + frames "
                    "the engine lost")


def _glitch_figures(report: Report, where: str, part: dict[str, Any], seconds: float,
                    counted: str) -> None:
    """streamcore's input glitches against each reference recorder's, on one server."""
    mine = part.get(PLAYERS[0]) or {"error": part.get("error") or "not measured"}
    for name in PLAYERS[1:]:
        ref = part.get(name) or {"error": part.get("error") or "not measured"}
        report.add(f"{where}: input glitches recording {seconds:g} s under load (vs "
                   f"{name.split(' (')[0]} {name.split(' (')[1].rstrip(')')})",
                   mine.get("glitches"), "glitches", reference=(name, ref.get("glitches")),
                   reference_error=ref.get("error"), higher_is_better=False, goal=GOAL,
                   note=mine.get("error") or counted)


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
    # The smoke form (the test suite's) measures PipeWire's round trip only: a CI run of it
    # with the recorders ran over the test's 300 s, which a local run never came near (33 s).
    pipewire = _pipewire_part(periods, repeats, seconds, recorders=not smoke)
    _pipewire_figures(report, pipewire, seconds)
    report.extra = {"seconds": seconds, "samplerate": RATE, "periods": list(periods),
                    "results": parts, "pipewire": pipewire}
    return report


def main(args: list[str] | None = None) -> int:
    return bench_main("duplex", run, __doc__.splitlines()[0], args)


if __name__ == "__main__":
    raise SystemExit(main())
