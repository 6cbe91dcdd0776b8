"""The capture commands: `streamcore record` and `streamcore latency` (issue 16).

`record` opens the device full duplex and writes its input through the engine's C tap
writer (Engine.record_to) to a file or, with --pipe, to stdout as a streaming WAV: Python
only starts it and draws the progress line with the input meters (Engine.input_levels).
`latency` measures the round trip through a loopback the user made (a cable, a JACK or
PipeWire connection, a monitor) and prints it next to the host's own figure.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any

from streamcore.cli.exits import OK

__all__ = ["latency_command", "record_command"]


def _meter(peak: float, width: int = 12) -> str:
    """A bar for one channel's peak, -60 .. 0 dBFS, and the figure."""
    db = 20 * math.log10(peak) if peak > 0 else -math.inf
    filled = 0 if db == -math.inf else max(0, min(width, round((db + 60) / 60 * width)))
    figure = " -inf" if db == -math.inf else f"{db:5.1f}"
    return "[" + "#" * filled + "." * (width - filled) + f"]{figure}"


def _duplex_engine(args: argparse.Namespace, input_channels: int) -> Any:
    import streamcore
    from streamcore.sinks.device import DeviceSink

    sink = DeviceSink(args.device, input_device=args.input_device)
    return streamcore.Engine(samplerate=args.rate, blocksize=args.blocksize, periods=args.periods,
                             sink=sink, realtime=args.realtime, input_channels=input_channels)


def record_command(args: argparse.Namespace) -> int:
    """`streamcore record OUT --seconds S` / `--pipe`: the input to a file or stdout."""
    if (args.out is None) == (not args.pipe):
        raise ValueError("give OUT (a file) or --pipe (stdout), one of them")
    progress = sys.stderr if args.pipe else sys.stdout
    show = (not args.quiet and progress.isatty()) or args.progress
    engine = _duplex_engine(args, args.channels)
    try:
        engine.start()
        target: Any = sys.stdout.buffer if args.pipe else args.out
        frames = None if args.seconds is None else max(1, round(args.seconds * args.rate))
        writer = engine.record_to(target, frames=frames, format=args.format, dtype=args.dtype)
        begun = time.monotonic()
        try:
            while not writer.wait(0.1):
                if show:
                    levels = " ".join(_meter(p) for p in engine.input_levels())
                    written = writer.stats()["frames"] / args.rate
                    glitches = engine.stats().glitches.get("input", 0)
                    progress.write(f"\r{written:7.1f} s  {levels}  lost {glitches}  ")
                    progress.flush()
        except KeyboardInterrupt:
            pass
        finally:
            writer.close()
        stats = engine.stats()
        figures = writer.stats()
        if show:
            progress.write("\n")
        if not args.quiet:
            where = "stdout" if args.pipe else args.out
            print(f"recorded {figures['frames']} frames ({figures['frames'] / args.rate:.2f} s) "
                  f"of {args.channels} channels to {where} in {time.monotonic() - begun:.1f} s;"
                  f" input glitches {stats.glitches.get('input', 0)}, device xruns "
                  f"{stats.glitches['device']}, taints "
                  f"{','.join(sorted(stats.taints)) or 'none'}", file=sys.stderr)
    finally:
        engine.close()
    return OK


def latency_command(args: argparse.Namespace) -> int:
    """`streamcore latency`: the measured round trip, the host's figure, the difference."""
    from streamcore.errors import LoopbackNotFoundError

    engine = _duplex_engine(args, args.channels)
    try:
        engine.start()
        deadline = time.monotonic() + args.wait
        while True:
            try:
                latency = engine.measure_latency(args.seconds)
                break
            except LoopbackNotFoundError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        sink = engine.stats().sink
    finally:
        engine.close()
    reported = latency.reported_frames
    result = {"frames": latency.frames, "fraction": latency.fraction, "ms": latency.ms,
              "reported_frames": reported,
              "reported_ms": None if reported is None else 1e3 * reported / args.rate,
              "difference_frames": None if reported is None else latency.frames - reported,
              "confidence": latency.confidence, "input_channel": latency.input_channel,
              "samplerate": args.rate, "device": sink.get("device_name"),
              "hostapi": sink.get("hostapi"), "host_period": sink.get("host_period")}
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return OK
    print(f"round trip  {latency.frames} frames  {latency.ms:.3f} ms  (found on input "
          f"{latency.input_channel}, confidence {latency.confidence:.0f})")
    if reported is None:
        print("host says   unknown")
    else:
        print(f"host says   {reported} frames  {result['reported_ms']:.3f} ms")
        print(f"difference  {latency.frames - reported:+d} frames")
    return OK
