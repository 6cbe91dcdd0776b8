"""The handlers of the `streamcore` subcommands: each takes the parsed arguments, calls the
library with plain values and returns the exit status (streamcore.cli.exits).

Whatever needs the native core (the engine, the sinks, profiling) is imported inside the
handler that uses it, so ``info``, ``doctor`` and ``--version`` run without it and say how to
rebuild it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from streamcore import _facts
from streamcore.cli.exits import FAILURE, INTERRUPTED, OK, UsageError
from streamcore.cli.output import Output, choose_output
from streamcore.cli.progress import Progress, figures
from streamcore.system import format_report, print_report, system_report

__all__ = ["Session", "demo_command", "devices_command", "doctor_command",
           "engine_stats_after_close", "info_command", "play_command", "run_session",
           "stats_command", "top_command", "trace_command"]


# ---- info, doctor ----------------------------------------------------------------------------

def info_command(args: argparse.Namespace) -> int:
    """`streamcore info` (also the default): what this machine and process offer."""
    print_report(system_report(bus_timeout=args.bus_timeout), args.json, format_report)
    return OK


def doctor_command(args: argparse.Namespace) -> int:
    """`streamcore doctor`: exit 0 when it ran (whatever the verdicts).  Without a usable
    native core it still runs, and says on stderr which checks that leaves unknown."""
    from streamcore import doctor as _doctor

    problem = _facts.native_core().problem()
    if problem is not None:
        print(f"streamcore: {problem} (the realtime and memory-lock checks need it)",
              file=sys.stderr)
    print_report(_doctor.run_checks(timeout=args.bus_timeout), args.json, _doctor.format_report)
    return OK


def _finish(engine: Any) -> tuple[Any, str | None]:
    """The engine's last figures and its sink's error (or the one closing raised), once
    closed."""
    from streamcore.errors import SinkError

    stats = engine.stats()
    sink = engine.sink_object
    error = None if sink is None else sink.error
    try:
        engine.close()
    except SinkError as e:
        error = error or str(e)
    return stats, error


# ---- play ----------------------------------------------------------------------------------

def play_command(args: argparse.Namespace) -> int:
    """`streamcore play FILE...`: the files one after another, gapless, with a progress
    line; Ctrl-C or SIGTERM fades out."""
    from streamcore.engine import Engine
    from streamcore.errors import DecodeError
    from streamcore.playback import Playback, db_to_gain, decode, fit_channels, resample

    messages = sys.stderr if args.pipe else sys.stdout
    gain = db_to_gain(args.gain)
    decoded = []
    for path in args.files:
        try:
            decoded.append(decode(path))
        except (OSError, DecodeError) as e:
            raise UsageError(str(e)) from e
    rate = args.rate or decoded[0].samplerate
    channels = max(d.channels for d in decoded)
    if channels == 1:
        channels = 2  # a mono file is heard on both sides
    if any(d.channels not in (1, channels) for d in decoded):
        raise UsageError("the files have different channel counts ("
                         + ", ".join(f"{d.path}: {d.channels}" for d in decoded)
                         + "); play them one at a time")
    output, rate = choose_output(args, "play", rate, channels)
    for note in output.notes:
        print(note, file=messages)
    import numpy as np

    for d in decoded:
        if d.samplerate != rate:
            print(f"{d.path}: {d.samplerate} Hz, resampled to {rate} Hz with soxr",
                  file=messages)
    # Gapless is continuous: consecutive files at the same rate are joined first and go
    # through one resampler run, so the join is as clean as the files themselves (each
    # resampled on its own, the filter's edges clicked at the join).
    parts = []
    for group in _runs_of_same_rate(decoded):
        joined = np.concatenate([fit_channels(d.frames, channels) for d in group])
        parts.append(fit_channels(resample(joined, group[0].samplerate, rate), channels))
    frames = parts[0] if len(parts) == 1 else np.ascontiguousarray(np.concatenate(parts))
    names = ", ".join(os.path.basename(d.path) for d in decoded)
    print(f"playing {names} ({frames.shape[0] / rate:.2f} s, {rate} Hz, {channels} ch) on "
          f"{output.label}", file=messages)

    progress = Progress(sys.stderr, enabled=not args.quiet)
    status = OK
    started = time.monotonic()
    # closing(), not the engine's own `with` (which starts it): the voice is queued first and
    # Playback starts the engine, so every output begins with the material at frame 0.
    with terminate_as_interrupt(), contextlib.closing(Engine(
            samplerate=rate, blocksize=args.blocksize, periods=args.periods,
            channels=channels, sink=output.sink, realtime=args.realtime)) as engine:
        playback = Playback(engine, frames, gain=gain, loop=args.loop)
        try:
            playback.wait(progress)
        except KeyboardInterrupt:
            progress.end()
            playback.stop(fade=args.fade)
            print(f"stopped: faded out over {1e3 * args.fade:.0f} ms", file=sys.stderr)
            status = INTERRUPTED
        progress.end()
        stats, error = _finish(engine)
    if error:
        print(f"streamcore: {error}", file=sys.stderr)
        status = FAILURE
    # An error is one line; its figures only with -v.
    if args.verbose or (not args.quiet and status != FAILURE):
        for line in figures(engine, engine_stats_after_close(stats, engine), output,
                             time.monotonic() - started):
            print(line, file=messages)
    return status


def _runs_of_same_rate(decoded: list[Any]) -> list[list[Any]]:
    """The decoded files in order, grouped into runs of consecutive files at one rate."""
    runs: list[list[Any]] = []
    for d in decoded:
        if runs and runs[-1][0].samplerate == d.samplerate:
            runs[-1].append(d)
        else:
            runs.append([d])
    return runs


def engine_stats_after_close(stats: Any, engine: Any) -> Any:
    """``stats`` with the sink's final figures (a file sink counts its drained frames at
    close)."""
    import dataclasses

    if engine.sink_object is None:
        return stats
    return dataclasses.replace(stats, sink={**stats.sink, **engine.sink_object.stats()})


class terminate_as_interrupt:
    """SIGTERM behaves like Ctrl-C (fade out, figures) while playing."""

    def __enter__(self) -> None:
        self.previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self.previous)


# ---- devices -------------------------------------------------------------------------------

def devices_command(args: argparse.Namespace) -> int:
    """`streamcore devices`: the output and input devices PortAudio offers."""
    import sounddevice as sd

    from streamcore.sinks.device import listed_devices

    devices, hostapis = list(sd.query_devices()), list(sd.query_hostapis())

    def rows(kind: str, default: int) -> list[dict[str, Any]]:
        return [{"index": i, "name": devices[i]["name"],
                 "hostapi": hostapis[devices[i]["hostapi"]]["name"],
                 "channels": devices[i][f"max_{kind}_channels"],
                 "default_samplerate": devices[i]["default_samplerate"],
                 "default": i == default} for i, _ in listed_devices(devices, hostapis, kind)]

    outputs, inputs = rows("output", sd.default.device[1]), rows("input", sd.default.device[0])
    if args.json:
        json.dump({"output_devices": outputs, "input_devices": inputs}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return OK
    if not outputs:
        print("no output device: PortAudio lists none (no sound card and no audio server); "
              "`streamcore play` and `demo` fall back to the null sink plus a WAV file")
    for title, listed in (("outputs", outputs), ("inputs", inputs)):
        if not listed:
            continue
        print(f"{title}:")
        for row in listed:
            mark = "*" if row["default"] else " "
            print(f"{mark}{row['index']:3d}  {row['name']} ({row['hostapi']}), "
                  f"{row['channels']} ch, {row['default_samplerate']:g} Hz")
    if outputs and not inputs:
        print("no input device: `streamcore record` and `latency` need one")
    return OK


# ---- stats ---------------------------------------------------------------------------------

@dataclass
class Session:
    """What one short engine run leaves behind (``streamcore stats``; issue 8 plots it)."""

    stats: Any                     # EngineStats, read at the end, before close
    trace: Any                     # telemetry.TRACE_DTYPE records, oldest first
    events: list[Any]
    grant: Any                     # the mixer's RealtimeGrant, or None
    engine: Any                    # the closed Engine (its settings stay readable)
    output: Output
    seconds: float


def run_session(args: argparse.Namespace, seconds: float, command: str = "stats") -> Session:
    """Run an engine for ``seconds`` with a quiet tone (-40 dB) on the sink the options name
    (default: the device, else the null sink) and collect its figures."""
    from streamcore import _tones
    from streamcore.engine import Engine

    output, rate = choose_output(args, command, 48000, 2, fallback_file=False)
    with Engine(samplerate=rate, blocksize=args.blocksize, periods=args.periods,
                sink=output.sink, realtime=args.realtime) as engine:
        engine.play(_tones.tone(440.0, 1.0, rate, level=0.01), loop=True)
        started = time.monotonic()
        time.sleep(seconds)
        stats = engine.stats(consistent=True)
        trace = engine.trace()
        events = engine.events()
        elapsed = time.monotonic() - started
    return Session(stats, trace, events, engine.grant, engine, output, elapsed)


def _stats_json(session: Session) -> dict[str, Any]:
    s = session.stats
    def hist(h: Any) -> dict[str, Any]:
        return {"count": h.count, "min_ns": h.min_ns, "max_ns": h.max_ns,
                "mean_ns": h.mean_ns if h.count else None,
                "p50_ns": h.percentile(50), "p99_ns": h.percentile(99),
                "buckets": list(h.buckets)}
    engine = session.engine
    return {
        "seconds": session.seconds,
        "engine": {"samplerate": engine.samplerate, "blocksize": engine.blocksize,
                   "periods": engine.periods, "channels": engine.channels,
                   "sink": session.output.label},
        "counters": {k: getattr(s, k) for k in (
            "periods", "cycles", "consumed", "skipped", "xruns", "frames", "clips", "nans",
            "underruns", "late_starts", "commands", "overruns", "sigxcpu", "demotions")},
        "wake_latency": hist(s.wake_latency),
        "mix_time": hist(s.mix_time),
        "taints": sorted(s.taints),
        "realtime": None if session.grant is None else {
            "method": session.grant.method, "policy": session.grant.policy,
            "priority": session.grant.priority, "nice": session.grant.nice,
            "reasons": list(session.grant.reasons)},
        "events": [str(e) for e in session.events],
        "sink": {k: v for k, v in s.sink.items() if isinstance(v, str | int | float | bool)
                 or v is None},
    }


def stats_command(args: argparse.Namespace) -> int:
    """`streamcore stats`: a short session and its telemetry (``--plot``: a PNG too)."""
    session = run_session(args, args.seconds)
    if args.plot:
        from streamcore.profiling import plot_stats

        print(f"plot: {plot_stats(session.stats, args.plot, trace=session.trace)}",
              file=sys.stderr)
    if args.json:
        json.dump(_stats_json(session), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return OK
    for line in figures(session.engine, session.stats, session.output, session.seconds):
        print(line)
    wake = session.stats.wake_latency
    print("  wake-up latency histogram (log2 buckets, µs upper edge: cycles):")
    print("    " + ", ".join(f"<{(2 ** (b + 1)) / 1e3:g}: {n}"
                             for b, n in enumerate(wake.buckets) if n))
    for event in session.events:
        print(f"  event: {event}")
    return OK


# ---- demo ----------------------------------------------------------------------------------

def demo_command(args: argparse.Namespace) -> int:
    """`streamcore demo`: one-shot voices on a grid, sample-accurate (what `make demo` runs)."""
    from streamcore import _tones
    from streamcore.engine import Engine

    output, rate = choose_output(args, "demo", 48000, 2)
    for note in output.notes:
        print(note)
    events = _tones.song(rate, bars=args.bars)
    length = max(at + len(sound) for at, sound in events) / rate
    print(f"demo: {len(events)} one-shot voices on a 120 bpm grid ({length:.1f} s), "
          f"sample-accurate starts, on {output.label}")
    started = time.monotonic()
    with Engine(samplerate=rate, blocksize=args.blocksize, periods=args.periods,
                sink=output.sink, realtime=args.realtime) as engine:
        origin = engine.frame + round(0.05 * rate)  # a little ahead of the mixer
        voices = [engine.play(sound, at=origin + at) for at, sound in events]
        try:
            for voice in voices:
                voice.wait()
            time.sleep(engine.periods * engine.blocksize / rate)
        except KeyboardInterrupt:
            for voice in voices:
                voice.stop(fade=0.03)
            raise
        stats, error = _finish(engine)
    for line in figures(engine, engine_stats_after_close(stats, engine), output,
                         time.monotonic() - started):
        print(line)
    if error:
        print(f"streamcore: {error}", file=sys.stderr)
        return FAILURE
    return OK


# ---- trace, top (streamcore.profiling) -----------------------------------------------------

def trace_command(args: argparse.Namespace) -> int:
    """`streamcore trace --seconds N --out trace.json`."""
    from streamcore.profiling import trace_session

    done = trace_session(args.out, args.seconds, samplerate=args.samplerate,
                         blocksize=args.blocksize, sink=args.sink)
    print(f"wrote {args.out}: {done.cycles} cycles, {done.xruns} xruns "
          f"(open it in https://ui.perfetto.dev or chrome://tracing)")
    return OK


def top_command(args: argparse.Namespace) -> int:
    """`streamcore top [--seconds N]`."""
    from streamcore.profiling import top_session

    top_session(args.seconds, args.interval, samplerate=args.samplerate,
                blocksize=args.blocksize, sink=args.sink)
    return OK
