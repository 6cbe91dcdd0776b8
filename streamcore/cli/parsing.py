"""The command line's grammar: the parser, its subcommands and their option types.

argparse lives in this package only; the library (doctor, profiling, system, playback) takes
plain values from the handlers in streamcore.cli.commands.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any, NoReturn

from streamcore._version import __version__
from streamcore.cli import capture, commands

__all__ = ["build_parser"]

_DESCRIPTION = "The `streamcore` command (also `python -m streamcore`)."

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


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


def _add_output_options(parser: argparse.ArgumentParser, pipe: bool = True) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--device", type=_device_arg, metavar="X",
                       help="output device: index or part of its name (`streamcore devices`)")
    if pipe:
        where.add_argument("--pipe", action="store_true",
                           help="write a WAV stream to stdout (`... --pipe | aplay`), "
                                "exactly the audio, as fast as the reader takes it; messages "
                                "go to stderr")
        parser.add_argument("--zero-copy", dest="zero_copy", action="store_true",
                            help="with --pipe: hand the pipe the output's own pages "
                                 "(vmsplice), for readers that read() them (aplay, sox, "
                                 "ffmpeg); never for one that splices onward (pv)")
        parser.add_argument("--realtime", dest="paced", action="store_true",
                            help="with --pipe: hand the stream over at the sample rate's "
                                 "pace (live streams, `| ffmpeg ... -f rtp`)")
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


def _add_capture_options(parser: argparse.ArgumentParser) -> None:
    """The duplex engine's options (record, latency)."""
    parser.add_argument("--device", type=_device_arg, metavar="X",
                        help="device: index or part of its name (`streamcore devices`)")
    parser.add_argument("--input-device", dest="input_device", type=_device_arg, metavar="X",
                        help="capture from another device than --device's")
    parser.add_argument("--channels", type=_int_in(1, 32), default=2, metavar="N",
                        help="input channels (default 2)")
    parser.add_argument("--rate", type=_int_in(8000, 384000), default=48000, metavar="HZ",
                        help="sample rate (default 48000)")
    parser.add_argument("--blocksize", type=_int_in(16, 8192), default=256, metavar="N",
                        help="frames per period (default 256)")
    parser.add_argument("--periods", type=_int_in(2, 64), default=2, metavar="N",
                        help="periods in the output ring (default 2)")
    parser.add_argument("--no-realtime", dest="realtime", action="store_false",
                        help="do not ask realtime scheduling for the mixer")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    """The engine options the profiling commands (trace, top) share."""
    parser.add_argument("--samplerate", type=int, default=48000)
    parser.add_argument("--blocksize", type=int, default=128)
    parser.add_argument("--sink", default="null", choices=("null", "device"),
                        help="null: timer clock, no device (default); device: the default "
                             "output device")


# ---- the parser ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """The parser; ``commands`` (an attribute of the returned parser) maps each subcommand's
    name to its own parser, for adding options to it.

    Each subcommand sets ``run`` (its handler) and ``needs_native`` (whether it cannot run
    without the native core; streamcore.cli.main checks that first)."""
    parser = _Parser(prog="streamcore", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--bus-timeout", type=float, default=1.0, metavar="SECONDS",
                        help="how long to wait for the system bus and rtkit (default 1)")
    parser.set_defaults(run=commands.info_command, needs_native=False)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    named: dict[str, argparse.ArgumentParser] = {}
    parser.commands = named  # type: ignore[attr-defined]

    def add(name: str, run: Handler, help: str, needs_native: bool) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help, description=help)
        command.set_defaults(run=run, needs_native=needs_native)
        named[name] = command
        return command

    info = add("info", commands.info_command, "what this machine offers (the default)", False)
    info.add_argument("--json", action="store_true", help="print the report as JSON")

    doctor = add("doctor", commands.doctor_command,
                 "check this machine and user for realtime audio", False)
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--bus-timeout", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                        help="bound for each bus step (default 1)")

    devices = add("devices", commands.devices_command,
                  "list the output and input devices PortAudio offers", True)
    devices.add_argument("--json", action="store_true", help="print the list as JSON")

    play = add("play", commands.play_command, "play audio files (WAV, FLAC, OGG)", True)
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
    play.add_argument("-v", "--verbose", action="store_true",
                      help="also print the figures after an error")
    play.add_argument("-q", "--quiet", action="store_true",
                      help="no progress line and no figures")

    stats = add("stats", commands.stats_command,
                "run a short session and print the telemetry summary", True)
    _add_output_options(stats, pipe=False)
    stats.add_argument("--seconds", type=_float_in(0.05, 3600.0, "seconds"), default=1.0,
                       help="how long to run (default 1)")
    stats.add_argument("--json", action="store_true", help="print the figures as JSON")

    demo = add("demo", commands.demo_command, "the main demo (what `make demo` runs)", True)
    _add_output_options(demo, pipe=False)
    demo.add_argument("--bars", type=_int_in(1, 64), default=1,
                      help="bars of the pattern (2 s each, default 1)")

    record = add("record", capture.record_command,
                 "record the input to a file, or to stdout with --pipe", True)
    record.add_argument("out", nargs="?", metavar="OUT",
                        help="a file (WAV by default; see --format)")
    record.add_argument("--pipe", action="store_true",
                        help="write a WAV stream to stdout (`... --pipe | ffmpeg -i - ...`); "
                             "messages go to stderr")
    record.add_argument("--seconds", type=_float_in(0.001, 1e7, "seconds"), default=None,
                        help="how long (default: until Ctrl-C)")
    record.add_argument("--format", choices=("wav", "f32le", "s16le"), default="wav",
                        help="wav (default), or raw float32 / int16")
    record.add_argument("--dtype", choices=("float32", "int16"), default="float32",
                        help="WAV samples (default float32: bit-exact)")
    record.add_argument("--progress", action="store_true",
                        help="the progress line with input meters even when not a terminal")
    record.add_argument("-q", "--quiet", action="store_true", help="no progress, no figures")
    _add_capture_options(record)

    latency = add("latency", capture.latency_command,
                  "measure the round trip through a loopback (outputs wired to inputs)", True)
    latency.add_argument("--seconds", type=_float_in(0.05, 10.0, "seconds"), default=1.0,
                         help="the measurement signal's length at most (default 1)")
    latency.add_argument("--wait", type=_float_in(0.0, 600.0, "seconds"), default=0.0,
                         help="keep trying this long until a loopback is found (time to "
                              "connect one; default 0)")
    latency.add_argument("--json", action="store_true", help="print the figures as JSON")
    _add_capture_options(latency)

    # profiling commands (issue 8): the library side is streamcore/profiling.py
    trace = sub.add_parser("trace", help="record per-period events as Chrome trace-event JSON")
    trace.add_argument("--seconds", type=float, default=5.0, help="how long (default 5)")
    trace.add_argument("--out", default="trace.json", help="output file (default trace.json)")
    _add_engine_options(trace)
    trace.set_defaults(run=commands.trace_command, needs_native=True)
    top = sub.add_parser("top", help="a live view of a running engine's figures")
    top.add_argument("--seconds", type=float, default=None, help="stop after this long "
                     "(default: until Ctrl-C)")
    top.add_argument("--interval", type=float, default=0.25, help="refresh period, s")
    _add_engine_options(top)
    top.set_defaults(run=commands.top_command, needs_native=True)
    stats.add_argument("--plot", metavar="PNG", default=None,
                       help="also draw the latency histograms and fill level (needs matplotlib)")
    return parser
