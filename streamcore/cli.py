"""The `streamcore` command (also `python -m streamcore`).

Commands: ``info`` (the default: what this machine offers), ``doctor``, ``devices``, ``play``,
``stats``, ``demo``.  Each subcommand is one small ``_cmd_*`` handler taking the parsed
arguments and returning the exit status.

Exit status: 0 success; 1 a runtime failure (something failed while running: the device or
its audio server went away, a pipe's reader left, a disk error); 2 a usage error (the command
line cannot be carried out as written: a bad option value, a missing or undecodable file, an
unknown device); 130 interrupted (Ctrl-C; ``play`` fades out first).  Errors are one line on
stderr (``streamcore: ...``); ``--debug`` shows the traceback instead.

With no sound device at all, ``play`` and ``demo`` say so in one line and play to the null
sink while writing what would have been heard to a WAV file, then print the run's figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn, TextIO

from streamcore.doctor import run as _doctor
from streamcore.system import format_report, print_report, system_report

__all__ = ["UsageError", "build_parser", "main"]


class UsageError(Exception):
    """The command line cannot be carried out as written (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _info(args: argparse.Namespace) -> int:
    print_report(system_report(bus_timeout=args.bus_timeout), args.json, format_report)
    return 0


# ---- option types: a bad value is a usage error (argparse exits 2) --------------------------

def _int_in(lo: int, hi: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is outside {lo}..{hi}")
        return value
    return parse


def _float_in(lo: float, hi: float, what: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is outside {lo:g}..{hi:g} {what}")
        return value
    return parse


def _device_arg(text: str) -> int | str:
    return int(text) if text.strip().isdigit() else text


# ---- where the audio goes ------------------------------------------------------------------

@dataclass
class _Output:
    """The sink chosen from the command line, and what to tell the user about it."""

    sink: Any                      # what Engine(sink=...) takes
    label: str                     # 'device 3', 'null sink', 'stdout (WAV)', 'file x.wav'
    device: int | str | None = None
    wav_path: str | None = None    # the file written (--out, or the no-device fallback)
    fallback: bool = False
    notes: list[str] = field(default_factory=list)


def _add_output_options(parser: argparse.ArgumentParser, pipe: bool = True) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--device", type=_device_arg, metavar="X",
                       help="output device: index or part of its name (`streamcore devices`)")
    if pipe:
        where.add_argument("--pipe", action="store_true",
                           help="write a WAV stream to stdout (`... --pipe | aplay`); "
                                "messages go to stderr")
    where.add_argument("--null", action="store_true",
                       help="the null sink: a timer clock, nothing is heard or written")
    where.add_argument("--out", metavar="FILE",
                       help="write to FILE (WAV, FLAC or OGG by extension) at the sample "
                            "rate's pace")
    parser.add_argument("--blocksize", type=_int_in(16, 8192), default=512, metavar="N",
                        help="frames per period (16..8192, default 512)")
    parser.add_argument("--periods", type=_int_in(2, 64), default=3, metavar="N",
                        help="periods in the output ring (2..64, default 3; the pipe sink "
                             "sets its own)")
    parser.add_argument("--no-realtime", dest="realtime", action="store_false",
                        help="do not ask realtime scheduling for the mixer")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")


def _fallback_path(command: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"streamcore-{command}.wav")


def _choose_output(args: argparse.Namespace, command: str, samplerate: int, channels: int,
                   fallback_file: bool = True) -> tuple[_Output, int]:
    """The sink and the engine's samplerate (the device's own when it refuses ``samplerate``).
    No device at all and none asked for: the null sink, plus a WAV file when
    ``fallback_file``."""
    from streamcore.errors import DeviceNotFoundError, NoDeviceError
    from streamcore.playback import device_samplerate
    from streamcore.sinks import DeviceSink, FileSink, PipeSink

    if getattr(args, "pipe", False):
        if sys.stdout.isatty():
            raise UsageError("--pipe writes binary audio to stdout: pipe it into a program "
                             "(`streamcore play FILE --pipe | aplay`)")
        return _Output(PipeSink("stdout", format="wav"), "stdout (WAV stream)"), samplerate
    if args.null:
        return _Output("null", "null sink"), samplerate
    if args.out:
        path = args.out
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise UsageError(f"--out {path}: the directory {directory} does not exist")
        try:
            sink = FileSink(path, realtime=True)
            from streamcore.sinks.file import choose_format

            choose_format(path, None, None, "float32")
        except ValueError as e:
            raise UsageError(f"--out {path}: {e}") from e
        return _Output(sink, f"file {path}", wav_path=path), samplerate
    try:
        rate = device_samplerate(args.device, samplerate, channels)
    except DeviceNotFoundError as e:
        raise UsageError(str(e)) from e
    except NoDeviceError as e:
        if args.device is not None:
            raise UsageError(f"no device {args.device!r}: PortAudio lists no output device "
                             f"(no sound card and no audio server running); use --null, "
                             f"--out FILE or --pipe") from e
        if not fallback_file:
            print("no sound device (PortAudio lists no output): using the null sink",
                  file=sys.stderr)
            return _Output("null", "null sink (no sound device)", fallback=True), samplerate
        path = _fallback_path(command)
        print(f"no sound device (PortAudio lists no output): playing to the null sink and "
              f"writing what would have been heard to {path}", file=sys.stderr)
        return (_Output(FileSink(path, realtime=True), f"null sink + {path}", wav_path=path,
                        fallback=True), samplerate)
    out = _Output(DeviceSink(args.device), "device", device=args.device)
    if rate != samplerate:
        out.notes.append(f"the device runs at {rate} Hz, not {samplerate} Hz: resampling "
                         f"with soxr")
    return out, rate


# ---- reporting -----------------------------------------------------------------------------

def _clock(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def _realtime_text(engine: Any) -> str:
    grant = engine.grant
    if grant is None:
        return "off"
    if grant.realtime:
        return f"{grant.method} {grant.policy} {grant.priority}"
    return f"{grant.method} (not realtime, nice {grant.nice})"


class _Progress:
    """The live progress line: '\\r'-refreshed on a terminal, one line a second otherwise."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.last = 0.0
        self.width = 0

    def __call__(self, playback: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not self.tty and now - self.last < 1.0 and not playback.done:
            return
        self.last = now
        engine = playback.engine
        stats = engine.stats()
        xruns = stats.xruns + int(stats.sink.get("xruns", 0) or 0)
        capacity = engine.periods * engine.blocksize
        line = (f"{_clock(playback.position)} / {_clock(playback.duration)}"
                f"{' (loop)' if playback.loop else ''}  xruns {xruns}  "
                f"rt {_realtime_text(engine)}  fill {100 * stats.fill // capacity}%  "
                f"taints {','.join(sorted(stats.taints)) or 'none'}")
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()


def _wake_line(wake: Any, sink: dict[str, Any]) -> str:
    if sink.get("writer") == "mixer":
        return ("  mixer wake-up latency: none to measure (the mixer writes the pipe itself; "
                "the pipe's reader is its clock)")
    return (f"  mixer wake-up latency: p50 {wake.percentile(50) / 1e3:.0f} µs, p99 "
            f"{wake.percentile(99) / 1e3:.0f} µs, max {wake.max_ns / 1e3:.0f} µs")


def _figures(engine: Any, stats: Any, output: _Output, seconds: float) -> list[str]:
    """The run's figures, a few lines of text."""
    latency_ms = 1e3 * engine.periods * engine.blocksize / engine.samplerate
    sink = stats.sink
    where = output.label
    if sink.get("name") == "device":
        where = f"device {sink.get('device')} '{sink.get('device_name')}' ({sink.get('hostapi')})"
    wake, mix = stats.wake_latency, stats.mix_time
    lines = [
        f"figures: {seconds:.2f} s at {engine.samplerate} Hz, {engine.channels} ch, "
        f"{engine.blocksize} frames x {engine.periods} periods ({latency_ms:.1f} ms), "
        f"sink: {where}",
        f"  periods {stats.periods}, xruns {stats.xruns}, underruns {stats.underruns}, "
        f"skipped {stats.skipped}, clipped samples {stats.clips}, late starts "
        f"{stats.late_starts}",
        _wake_line(wake, sink) + f"; mix time p99 {mix.percentile(99) / 1e3:.0f} µs",
        f"  realtime: {engine.grant if engine.grant is not None else 'not asked'}",
        f"  watchdog: {stats.demotions} demotions, {stats.overruns} overruns; taints "
        f"{', '.join(sorted(stats.taints)) or 'none'}",
    ]
    if sink.get("name") == "device":
        lines.append(f"  device: {sink.get('callbacks', 0)} callbacks, xruns "
                     f"{sink.get('xruns', 0)}, underruns {sink.get('underruns', 0)}, "
                     f"latency {1e3 * float(sink.get('latency', 0.0)):.1f} ms")
    if sink.get("name") == "pipe":
        lines.append(f"  pipe: zero copy {sink.get('zero_copy')}, written by the "
                     f"{sink.get('writer')}"
                     + (f" ({sink['copy_reason']})" if sink.get("copy_reason") else ""))
    if output.wav_path:
        lines.append(f"  wrote {output.wav_path} ({sink.get('frames', 0)} frames, "
                     f"{sink.get('format')} {sink.get('subtype')})")
    return lines


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

def _cmd_play(args: argparse.Namespace) -> int:
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
    output, rate = _choose_output(args, "play", rate, channels)
    for note in output.notes:
        print(note, file=messages)
    parts = []
    for d in decoded:
        if d.samplerate != rate:
            print(f"{d.path}: {d.samplerate} Hz, resampled to {rate} Hz with soxr",
                  file=messages)
        parts.append(fit_channels(resample(d.frames, d.samplerate, rate), channels))
    import numpy as np

    frames = parts[0] if len(parts) == 1 else np.ascontiguousarray(np.concatenate(parts))
    names = ", ".join(os.path.basename(d.path) for d in decoded)
    print(f"playing {names} ({frames.shape[0] / rate:.2f} s, {rate} Hz, {channels} ch) on "
          f"{output.label}", file=messages)

    progress = _Progress(sys.stderr, enabled=not args.quiet)
    status = 0
    started = time.monotonic()
    with _terminate_as_interrupt(), Engine(samplerate=rate, blocksize=args.blocksize,
                                           periods=args.periods, channels=channels,
                                           sink=output.sink, realtime=args.realtime) as engine:
        playback = Playback(engine, frames, gain=gain, loop=args.loop)
        try:
            playback.wait(progress)
        except KeyboardInterrupt:
            progress.end()
            playback.stop(fade=args.fade)
            print(f"stopped: faded out over {1e3 * args.fade:.0f} ms", file=sys.stderr)
            status = 130
        progress.end()
        stats, error = _finish(engine)
    if error:
        print(f"streamcore: {error}", file=sys.stderr)
        status = 1
    if not args.quiet or status:
        for line in _figures(engine, engine_stats_after_close(stats, engine), output,
                             time.monotonic() - started):
            print(line, file=messages)
    return status


def engine_stats_after_close(stats: Any, engine: Any) -> Any:
    """``stats`` with the sink's final figures (a file sink counts its drained frames at
    close)."""
    import dataclasses

    if engine.sink_object is None:
        return stats
    return dataclasses.replace(stats, sink={**stats.sink, **engine.sink_object.stats()})


class _terminate_as_interrupt:
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

def _cmd_devices(args: argparse.Namespace) -> int:
    import sounddevice as sd

    from streamcore.sinks.device import output_devices

    devices, hostapis = list(sd.query_devices()), list(sd.query_hostapis())
    default = sd.default.device[1]
    rows = [{"index": i, "name": devices[i]["name"],
             "hostapi": hostapis[devices[i]["hostapi"]]["name"],
             "channels": devices[i]["max_output_channels"],
             "default_samplerate": devices[i]["default_samplerate"],
             "default": i == default} for i, _ in output_devices(devices, hostapis)]
    if args.json:
        json.dump({"output_devices": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not rows:
        print("no output device: PortAudio lists none (no sound card and no audio server); "
              "`streamcore play` and `demo` fall back to the null sink plus a WAV file")
        return 0
    for row in rows:
        mark = "*" if row["default"] else " "
        print(f"{mark}{row['index']:3d}  {row['name']} ({row['hostapi']}), {row['channels']} "
              f"ch, {row['default_samplerate']:g} Hz")
    return 0


# ---- stats ---------------------------------------------------------------------------------

@dataclass
class Session:
    """What one short engine run leaves behind (``streamcore stats``; issue 8 plots it)."""

    stats: Any                     # EngineStats, read at the end, before close
    trace: Any                     # telemetry.TRACE_DTYPE records, oldest first
    events: list[Any]
    grant: Any                     # the mixer's RealtimeGrant, or None
    engine: Any                    # the closed Engine (its settings stay readable)
    output: _Output
    seconds: float


def run_session(args: argparse.Namespace, seconds: float, command: str = "stats") -> Session:
    """Run an engine for ``seconds`` with a quiet tone (-40 dB) on the sink the options name
    (default: the device, else the null sink) and collect its figures."""
    from streamcore import _tones
    from streamcore.engine import Engine

    output, rate = _choose_output(args, command, 48000, 2, fallback_file=False)
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


def _cmd_stats(args: argparse.Namespace) -> int:
    session = run_session(args, args.seconds)
    if args.plot:
        from streamcore.profiling import plot_stats

        print(f"plot: {plot_stats(session.stats, args.plot, trace=session.trace)}",
              file=sys.stderr)
    if args.json:
        json.dump(_stats_json(session), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for line in _figures(session.engine, session.stats, session.output, session.seconds):
        print(line)
    wake = session.stats.wake_latency
    print("  wake-up latency histogram (log2 buckets, µs upper edge: cycles):")
    print("    " + ", ".join(f"<{(2 ** (b + 1)) / 1e3:g}: {n}"
                             for b, n in enumerate(wake.buckets) if n))
    for event in session.events:
        print(f"  event: {event}")
    return 0


# ---- demo ----------------------------------------------------------------------------------

def _cmd_demo(args: argparse.Namespace) -> int:
    from streamcore import _tones
    from streamcore.engine import Engine

    output, rate = _choose_output(args, "demo", 48000, 2)
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
    for line in _figures(engine, engine_stats_after_close(stats, engine), output,
                         time.monotonic() - started):
        print(line)
    if error:
        print(f"streamcore: {error}", file=sys.stderr)
        return 1
    return 0


# ---- the parser ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The parser; ``commands`` (an attribute of the returned parser) maps each subcommand's
    name to its own parser, for adding options to it."""
    parser = _Parser(prog="streamcore", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--bus-timeout", type=float, default=1.0, metavar="SECONDS",
                        help="how long to wait for the system bus and rtkit (default 1)")
    parser.set_defaults(run=_info)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    commands: dict[str, argparse.ArgumentParser] = {}
    parser.commands = commands  # type: ignore[attr-defined]

    def add(name: str, run: Any, help: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help, description=help)
        command.set_defaults(run=run)
        commands[name] = command
        return command

    info = add("info", _info, "what this machine offers (the default)")
    info.add_argument("--json", action="store_true", help="print the report as JSON")

    doctor = add("doctor", _doctor, "check this machine and user for realtime audio")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--bus-timeout", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                        help="bound for each bus step (default 1)")

    devices = add("devices", _cmd_devices, "list the output devices PortAudio offers")
    devices.add_argument("--json", action="store_true", help="print the list as JSON")

    play = add("play", _cmd_play, "play audio files (WAV, FLAC, OGG)")
    play.add_argument("files", nargs="+", metavar="FILE", help="played one after another")
    _add_output_options(play)
    play.add_argument("--gain", type=_float_in(-120.0, 24.0, "dB"), default=0.0, metavar="DB",
                      help="gain in dB (-120..24, default 0)")
    play.add_argument("--loop", action="store_true", help="repeat until Ctrl-C")
    play.add_argument("--rate", type=_int_in(8000, 384000), metavar="HZ",
                      help="engine sample rate (default: the first file's; files at other "
                           "rates are resampled with soxr)")
    play.add_argument("--fade", type=_float_in(0.0, 5.0, "seconds"), default=0.05,
                      metavar="SECONDS", help="fade-out on Ctrl-C (default 0.05)")
    play.add_argument("-q", "--quiet", action="store_true",
                      help="no progress line and no figures")

    stats = add("stats", _cmd_stats, "run a short session and print the telemetry summary")
    _add_output_options(stats, pipe=False)
    stats.add_argument("--seconds", type=_float_in(0.05, 3600.0, "seconds"), default=1.0,
                       help="how long to run (default 1)")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")

    demo = add("demo", _cmd_demo, "the main demo (what `make demo` runs)")
    _add_output_options(demo, pipe=False)
    demo.add_argument("--bars", type=_int_in(1, 64), default=1,
                      help="bars of the pattern (2 s each, default 1)")


    # profiling commands (issue 8): handlers in streamcore/profiling.py
    from streamcore import profiling as _profiling

    trace = sub.add_parser("trace", help="record per-period events as Chrome trace-event JSON")
    trace.add_argument("--seconds", type=float, default=5.0, help="how long (default 5)")
    trace.add_argument("--out", default="trace.json", help="output file (default trace.json)")
    _profiling.add_engine_arguments(trace)
    trace.set_defaults(run=_profiling.trace_command)
    top = sub.add_parser("top", help="a live view of a running engine's figures")
    top.add_argument("--seconds", type=float, default=None, help="stop after this long "
                     "(default: until Ctrl-C)")
    top.add_argument("--interval", type=float, default=0.25, help="refresh period, s")
    _profiling.add_engine_arguments(top)
    top.set_defaults(run=_profiling.top_command)
    stats.add_argument("--plot", metavar="PNG", default=None,
                       help="also draw the latency histograms and fill level (needs matplotlib)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bus_timeout <= 0:
        parser.error("--bus-timeout must be a positive number of seconds")
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except UsageError as e:
        if args.debug:
            raise
        print(f"streamcore: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if args.debug:
            raise
        print(f"streamcore: {_one_line(e)}", file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text
