"""Where the audio goes: the sink the output options name (``--device``, ``--pipe``,
``--null``, ``--out``), and the fallback when there is no sound device at all.

The sinks are imported when a command runs, not here: they need the native core.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from streamcore.cli.exits import UsageError

__all__ = ["Output", "choose_output", "fallback_path"]


@dataclass
class Output:
    """The sink chosen from the command line, and what to tell the user about it."""

    sink: Any                      # what Engine(sink=...) takes
    label: str                     # 'device 3', 'null sink', 'stdout (WAV)', 'file x.wav'
    device: int | str | None = None
    wav_path: str | None = None    # the file written (--out, or the no-device fallback)
    fallback: bool = False
    notes: list[str] = field(default_factory=list)


def fallback_path(command: str) -> str:
    """The WAV file a command writes when there is no sound device."""
    return os.path.join(tempfile.gettempdir(), f"streamcore-{command}.wav")


def choose_output(args: argparse.Namespace, command: str, samplerate: int, channels: int,
                  fallback_file: bool = True) -> tuple[Output, int]:
    """The sink and the engine's samplerate (the device's own when it refuses ``samplerate``).
    No device at all and none asked for: the null sink, plus a WAV file when
    ``fallback_file``."""
    from streamcore.errors import DeviceNotFoundError, NoDeviceError
    from streamcore.playback import device_samplerate
    from streamcore.sinks import DeviceSink, FileSink, PipeSink

    if getattr(args, "paced", False) and not getattr(args, "pipe", False):
        raise UsageError("--realtime paces the --pipe stream: give --pipe too (--out and "
                         "the device keep their own pace)")
    if getattr(args, "zero_copy", False) and not getattr(args, "pipe", False):
        raise UsageError("--zero-copy is for the --pipe stream: give --pipe too")
    if getattr(args, "pipe", False):
        if sys.stdout is None:  # Python's view of a closed descriptor 1
            raise UsageError("--pipe writes to stdout, which is closed: redirect it into a "
                             "program or a file")
        if sys.stdout.isatty():
            raise UsageError("--pipe writes binary audio to stdout: pipe it into a program "
                             "(`streamcore play FILE --pipe | aplay`)")
        paced = getattr(args, "paced", False)
        stream = PipeSink("stdout", format="wav", pace="realtime" if paced else "reader",
                          zero_copy=True if getattr(args, "zero_copy", False) else None)
        return (Output(stream, "stdout (WAV stream, paced at the sample rate)" if paced
                       else "stdout (WAV stream)"), samplerate)
    if args.null:
        return Output("null", "null sink"), samplerate
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
        return Output(sink, f"file {path}", wav_path=path), samplerate
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
            return Output("null", "null sink (no sound device)", fallback=True), samplerate
        path = fallback_path(command)
        print(f"no sound device (PortAudio lists no output): playing to the null sink and "
              f"writing what would have been heard to {path}", file=sys.stderr)
        return (Output(FileSink(path, realtime=True), f"null sink + {path}", wav_path=path,
                       fallback=True), samplerate)
    out = Output(DeviceSink(args.device), "device", device=args.device)
    if rate != samplerate:
        out.notes.append(f"the device runs at {rate} Hz, not {samplerate} Hz: resampling "
                         f"with soxr")
    return out, rate
