"""What a running command shows: the live progress line of ``play`` and the figures every
engine command prints at its end."""

from __future__ import annotations

import time
from typing import Any, TextIO

from streamcore.cli.output import Output

__all__ = ["Progress", "clock", "figures", "realtime_text"]


def clock(seconds: float) -> str:
    """``m:ss.s``."""
    minutes, rest = divmod(max(seconds, 0.0), 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def realtime_text(engine: Any) -> str:
    """How the engine's mixer got realtime, a few words."""
    grant = engine.grant
    if grant is None:
        return "off"
    if grant.realtime:
        return f"{grant.method} {grant.policy} {grant.priority}"
    return f"{grant.method} (not realtime, nice {grant.nice})"


class Progress:
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
        glitches = sum(stats.glitches.values())  # the same numbers as the final figures
        capacity = engine.periods * engine.blocksize
        line = (f"{clock(playback.position)} / {clock(playback.duration)}"
                f"{' (loop)' if playback.loop else ''}  glitches {glitches}  "
                f"rt {realtime_text(engine)}  fill {100 * stats.fill // capacity}%  "
                f"taints {','.join(sorted(stats.taints)) or 'none'}")
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self) -> None:
        """End the line (on a terminal) before anything else is printed."""
        if self.enabled and self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()


def _wake_line(wake: Any, sink: dict[str, Any]) -> str:
    if sink.get("writer") == "mixer":
        return ("  mixer wake-up latency: none to measure (the mixer writes the pipe itself; "
                "the pipe's reader is its clock)")
    return (f"  mixer wake-up latency: p50 {wake.percentile(50) / 1e3:.0f} µs, p99 "
            f"{wake.percentile(99) / 1e3:.0f} µs, max {wake.max_ns / 1e3:.0f} µs")


def figures(engine: Any, stats: Any, output: Output, seconds: float) -> list[str]:
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
        f"  periods {stats.periods}, glitches {sum(stats.glitches.values())} ("
        + ", ".join(f"{where} {n}" for where, n in stats.glitches.items())
        + f"), skipped {stats.skipped}, clipped samples {stats.clips}, late starts "
        f"{stats.late_starts}",
        _wake_line(wake, sink) + f"; mix time p99 {mix.percentile(99) / 1e3:.0f} µs",
        f"  realtime: {engine.grant if engine.grant is not None else 'not asked'}",
        f"  watchdog: {stats.demotions} demotions, {stats.overruns} overruns; taints "
        f"{', '.join(sorted(stats.taints)) or 'none'}",
    ]
    if sink.get("name") == "device":
        lines.append(f"  device: {sink.get('callbacks', 0)} callbacks, xruns "
                     f"{sink.get('xruns', 0)}, underruns {sink.get('underruns', 0)}, "
                     + (f"latency {sink['latency_ms']:.1f} ms ({sink['latency_frames']} frames)"
                        if sink.get("latency_ms") is not None else "latency unknown"))
    if sink.get("name") == "pipe":
        lines.append(f"  pipe: zero copy {sink.get('zero_copy')}, written by the "
                     f"{sink.get('writer')}"
                     + (f" ({sink['copy_reason']})" if sink.get("copy_reason") else ""))
    if output.wav_path:
        lines.append(f"  wrote {output.wav_path} ({sink.get('frames', 0)} frames, "
                     f"{sink.get('format')} {sink.get('subtype')})")
    return lines
