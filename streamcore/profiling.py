"""Profiling output: Chrome trace-event JSON, matplotlib plots and a live `top` view.

- :func:`chrome_trace` turns an engine's per-cycle records (``Engine.trace()``) and watchdog
  events into trace-event JSON that Perfetto UI and chrome://tracing open: one ``mix cycle``
  slice per mixer cycle, ``wake latency`` and ``fill`` counters, ``xrun`` and ``watchdog``
  instants.  :class:`TraceRecorder` collects records for longer than the engine's trace ring
  holds (it polls and keeps each cycle once).
- :func:`plot_stats` draws the wake latency histogram, the mix time histogram and the fill
  level over time into a PNG (matplotlib: the ``plot`` extra).
- :func:`top_lines` formats one screen of the engine's figures; :func:`top` refreshes it a few
  times a second on a terminal.
- :func:`trace_session` and :func:`top_session` run a demo engine for ``streamcore trace``
  and ``streamcore top`` (their command lines: streamcore/cli/); ``streamcore stats --plot``
  calls :func:`plot_stats`.

Concurrency: everything here only reads an engine (``stats()``, ``trace()``, ``events()``),
which any Python thread may do while it runs; nothing here runs in the mixer's thread.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as _np

from streamcore.telemetry import TRACE_DEMOTED, TRACE_DTYPE, TRACE_XRUN, EngineStats, Histogram

if TYPE_CHECKING:
    from streamcore.engine import Engine

__all__ = ["TraceRecorder", "TraceSession", "chrome_trace", "plot_stats", "top", "top_lines",
           "top_session", "trace_session", "write_chrome_trace"]

#: Names of the trace events, as Perfetto and chrome://tracing show them.
EVENT_CYCLE = "mix cycle"
EVENT_LATENCY = "wake latency"
EVENT_FILL = "fill"
EVENT_XRUN = "xrun"
EVENT_DEMOTED = "mixer demoted"
EVENT_WATCHDOG = "watchdog"
EVENT_DEVICE = "device callback"
DEVICE_TID = 2  # the device callbacks' track (the mixer's is its tid, or 1)

_PID = 1  # one process per trace: the engine


class TraceRecorder:
    """Collects an engine's per-cycle records over any length of time.

    The engine keeps only its last ``SC_TRACE_SLOTS`` cycles; :meth:`poll` copies what is new
    (by cycle number) and must be called at least once per that many periods (8192 periods:
    8 s at 1 ms).  :attr:`missed` counts cycles that were overwritten before a poll.
    One Python thread calls poll(); the engine keeps running meanwhile."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._chunks: list[_np.ndarray] = []
        self._last_cycle: int | None = None
        self.missed = 0

    def poll(self) -> int:
        """Copy the records not seen yet; returns how many."""
        records = self.engine.trace()
        if self._last_cycle is not None:
            records = records[records["cycle"] > self._last_cycle]
            if len(records) and int(records["cycle"][0]) > self._last_cycle + 1:
                self.missed += int(records["cycle"][0]) - self._last_cycle - 1
        if len(records):
            self._last_cycle = int(records["cycle"][-1])
            self._chunks.append(records)
        return len(records)

    def records(self) -> _np.ndarray:
        """Every record collected so far, oldest first (a TRACE_DTYPE array)."""
        if not self._chunks:
            return _np.zeros(0, dtype=TRACE_DTYPE)
        return _np.concatenate(self._chunks)

    def run(self, seconds: float, every: float = 1.0) -> _np.ndarray:
        """Poll every ``every`` s for ``seconds`` s; returns :meth:`records`."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(every, left))
            self.poll()
        self.poll()
        return self.records()


def chrome_trace(records: _np.ndarray, events: Iterable[Any] = (), *, origin_ns: int | None = None,
                 mixer_tid: int = 0, metadata: dict[str, Any] | None = None,
                 device: _np.ndarray | None = None) -> dict[str, Any]:
    """A trace-event JSON object (the "JSON Object Format") for ``records`` (TRACE_DTYPE) and
    watchdog ``events`` (streamcore.watchdog.Event).

    Timestamps are µs since ``origin_ns`` (CLOCK_MONOTONIC; default: the first record's
    wake-up).  Per cycle: a complete event ``mix cycle`` (wake-up to end of work, args: cycle,
    late_us, fill, voices, rendered), counters ``wake latency`` (µs) and ``fill`` (frames), and
    instants ``xrun`` (the sink was short) and ``mixer demoted`` (the cycle ran demoted,
    first such cycle of each run).  Each watchdog event is a process-wide instant ``watchdog``
    whose args carry the reason.  ``device`` (``DeviceSink.timestamps()``): each device
    callback is an instant ``device callback`` on a track of its own, its args the output
    and input frames it began at and PortAudio's ADC/DAC/current times (s), so any output
    frame and any input frame can be placed on one time line."""
    records = _np.asarray(records)
    if records.dtype != TRACE_DTYPE:
        raise TypeError(f"records must be a TRACE_DTYPE array (Engine.trace()), "
                        f"not {records.dtype}")
    if origin_ns is None:
        origin_ns = int(records["wake_ns"][0]) if len(records) else 0
    tid = int(mixer_tid) or 1
    out: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": _PID, "tid": tid,
         "args": {"name": "streamcore engine"}},
        {"name": "thread_name", "ph": "M", "pid": _PID, "tid": tid,
         "args": {"name": f"mixer (tid {mixer_tid})" if mixer_tid else "mixer"}},
    ]
    was_demoted = False
    # tolist() once: per-field numpy scalars would make this loop several times slower.
    for cycle, wake, late, mix, fill, voices, flags, rendered in records.tolist():
        ts = (wake - origin_ns) / 1e3
        out.append({"name": EVENT_CYCLE, "cat": "mixer", "ph": "X", "pid": _PID, "tid": tid,
                    "ts": ts, "dur": max(mix, 0) / 1e3,
                    "args": {"cycle": cycle, "late_us": late / 1e3, "fill": fill,
                             "voices": voices, "rendered": rendered}})
        out.append({"name": EVENT_LATENCY, "cat": "mixer", "ph": "C", "pid": _PID, "ts": ts,
                    "args": {"µs": late / 1e3}})
        out.append({"name": EVENT_FILL, "cat": "mixer", "ph": "C", "pid": _PID, "ts": ts,
                    "args": {"frames": fill}})
        if flags & TRACE_XRUN:
            out.append({"name": EVENT_XRUN, "cat": "sink", "ph": "i", "s": "t", "pid": _PID,
                        "tid": tid, "ts": ts, "args": {"cycle": cycle, "fill": fill}})
        demoted = bool(flags & TRACE_DEMOTED)
        if demoted and not was_demoted:
            out.append({"name": EVENT_DEMOTED, "cat": "watchdog", "ph": "i", "s": "t",
                        "pid": _PID, "tid": tid, "ts": ts, "args": {"cycle": cycle}})
        was_demoted = demoted
    if device is not None and len(device):
        out.append({"name": "thread_name", "ph": "M", "pid": _PID, "tid": DEVICE_TID,
                    "args": {"name": "device callback"}})
        for ns, out_frame, in_frame, adc, dac, now, frames, status in device.tolist():
            out.append({"name": EVENT_DEVICE, "cat": "device", "ph": "i", "s": "t",
                        "pid": _PID, "tid": DEVICE_TID, "ts": (ns - origin_ns) / 1e3,
                        "args": {"output_frame": out_frame, "input_frame": in_frame,
                                 "input_adc_time": adc, "output_dac_time": dac,
                                 "current_time": now, "frames": frames, "status": status}})
    for event in events:
        out.append({"name": EVENT_WATCHDOG, "cat": "watchdog", "ph": "i", "s": "p",
                    "pid": _PID, "tid": tid, "ts": (event.time_ns - origin_ns) / 1e3,
                    "args": {"reason": event.reason, "tid": event.tid, "threads": event.threads,
                             "busy_us": event.busy_ns / 1e3, "streak": event.streak,
                             "canary_age_us": event.canary_age_ns / 1e3, "cycle": event.cycle,
                             "result": event.result}})
    return {"traceEvents": out, "displayTimeUnit": "ms", "otherData": dict(metadata or {})}


def write_chrome_trace(path: str | os.PathLike[str], records: _np.ndarray,
                       events: Iterable[Any] = (),
                       **kwargs: Any) -> Path:
    """:func:`chrome_trace` written to ``path`` as JSON; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(chrome_trace(records, events, **kwargs), default=str))
    return path


# ---- plots ----------------------------------------------------------------------------------

def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'streamcore[plot]'") from e
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _histogram_bars(ax: Any, hist: Histogram, title: str) -> None:
    used = [b for b, n in enumerate(hist.buckets) if n]
    if not used:
        ax.set_title(f"{title}: no samples")
        return
    lo, hi = used[0], used[-1]
    edges = [2 ** b / 1e3 for b in range(lo, hi + 2)]  # µs
    counts = hist.buckets[lo:hi + 1]
    ax.bar(edges[:-1], counts, width=_np.diff(edges), align="edge", edgecolor="black")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("µs (log2 buckets)")
    ax.set_ylabel("cycles")
    ax.set_title(f"{title}: p50 {hist.percentile(50) / 1e3:.1f} µs, "
                 f"p99 {hist.percentile(99) / 1e3:.1f} µs, max {hist.max_ns / 1e3:.1f} µs",
                 fontsize=9)


def plot_stats(source: Any, path: str | os.PathLike[str], trace: _np.ndarray | None = None,
               title: str | None = None) -> Path:
    """Write a PNG: wake latency histogram, mix time histogram, fill level over time.

    ``source``: an Engine (its stats() and, unless ``trace`` is given, its trace()) or an
    EngineStats (then the fill panel needs ``trace``, else it says there is none)."""
    if isinstance(source, EngineStats):
        stats = source
    else:
        stats = source.stats()
        if trace is None:
            trace = source.trace()
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), constrained_layout=True)
    _histogram_bars(axes[0], stats.wake_latency, "wake latency")
    _histogram_bars(axes[1], stats.mix_time, "mix time")
    ax = axes[2]
    if trace is not None and len(trace):
        t = (trace["wake_ns"] - trace["wake_ns"][0]) / 1e9
        ax.plot(t, trace["fill"], drawstyle="steps-post", linewidth=0.8)
        xruns = trace["flags"] & TRACE_XRUN != 0
        if xruns.any():
            ax.plot(t[xruns], trace["fill"][xruns], "rx", label="xrun")
            ax.legend()
        ax.set_xlabel("s")
        ax.set_ylabel("frames buffered")
        ax.set_title(f"fill level over the last {len(trace)} cycles", fontsize=9)
    else:
        ax.set_title("fill level: no trace records")
    fig.suptitle(title or f"streamcore: {stats.cycles} cycles, {stats.xruns} xruns, "
                 f"taints {','.join(sorted(stats.taints)) or 'none'}", fontsize=10)
    path = Path(path)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path


# ---- top --------------------------------------------------------------------------------------

def top_lines(stats: EngineStats, grant: Any = None, *, elapsed: float | None = None,
              previous: EngineStats | None = None, interval: float | None = None,
              period_ns: int | None = None) -> list[str]:
    """One screen of figures (pure: tested on data).  ``previous``/``interval``: the readout
    before and the seconds between, for rates."""
    wl, mt = stats.wake_latency, stats.mix_time
    rate = ""
    if previous is not None and interval:
        rate = f"  ({(stats.periods - previous.periods) / interval:.0f}/s)"
    if grant is None:
        realtime = "none (realtime not requested)"
    else:
        realtime = (f"{grant.method}: {grant.policy} priority {grant.priority}"
                    if grant.realtime else f"NOT realtime ({grant.method}, nice {grant.nice})")
    lines = [
        "streamcore top" + (f"   up {elapsed:.1f} s" if elapsed is not None else "")
        + ("   running" if stats.running else "   stopped"),
        f"periods  {stats.periods}{rate}   cycles {stats.cycles}   skipped {stats.skipped}",
        f"xruns    {stats.xruns}   underruns {stats.underruns}   clips {stats.clips}   "
        f"nans {stats.nans}",
        f"fill     {stats.fill} frames   voices {stats.voices}",
        f"wake latency µs  p50 {wl.percentile(50) / 1e3:8.1f}  p99 {wl.percentile(99) / 1e3:8.1f}"
        f"  p99.9 {wl.percentile(99.9) / 1e3:8.1f}  max {wl.max_ns / 1e3:8.1f}",
        f"mix time     µs  p50 {mt.percentile(50) / 1e3:8.1f}  p99 {mt.percentile(99) / 1e3:8.1f}"
        f"  p99.9 {mt.percentile(99.9) / 1e3:8.1f}  max {mt.max_ns / 1e3:8.1f}",
    ]
    if period_ns:
        lines.append(f"period   {period_ns / 1e3:.1f} µs   mix p99 = "
                     f"{100 * mt.percentile(99) / period_ns:.1f}% of it")
    lines += [
        f"realtime {realtime}",
        f"watchdog overruns {stats.overruns}   demotions {stats.demotions}   "
        f"sigxcpu {stats.sigxcpu}",
        f"taints   {','.join(sorted(stats.taints)) or 'none'}",
    ]
    if stats.sink:
        keys = ("name", "xruns", "underruns", "output_underflows", "bytes", "error")
        lines.append("sink     " + "  ".join(f"{k} {stats.sink[k]}" for k in keys
                                             if k in stats.sink))
    return lines


def top(engine: Engine, seconds: float | None = None, interval: float = 0.25,
        out: TextIO | None = None) -> EngineStats:
    """Show :func:`top_lines` for ``engine``, refreshed every ``interval`` s, for ``seconds``
    (None: until Ctrl-C).  On a terminal the screen is redrawn in place; otherwise each
    refresh is printed after the last.  Returns the last readout."""
    out = out or sys.stdout
    tty = out.isatty()
    started = time.monotonic()
    previous = None
    try:
        while True:
            stats = engine.stats()
            now = time.monotonic()
            lines = top_lines(stats, engine.grant, elapsed=now - started, previous=previous,
                              interval=interval, period_ns=engine.period_ns)
            out.write(("\x1b[H\x1b[2J" if tty else "\n") + "\n".join(lines) + "\n")
            out.flush()
            previous = stats
            if seconds is not None and now - started >= seconds:
                return stats
            time.sleep(interval)
    except KeyboardInterrupt:
        return engine.stats()


# ---- runs of a demo engine (`streamcore trace` and `streamcore top`) --------------------------

@dataclass(frozen=True)
class TraceSession:
    """What :func:`trace_session` wrote.

    Parameters
    ----------
    path : Path
        The trace-event JSON file.
    cycles : int
        Mixer cycles in it.
    xruns : int
        The engine's xruns over the run.
    missed : int
        Cycles overwritten in the engine's trace ring before they were collected.
    """

    path: Path
    cycles: int
    xruns: int
    missed: int


@contextmanager
def _demo_engine(samplerate: int, blocksize: int, sink: str) -> Iterator[Engine]:
    """An engine on ``sink``, playing a few quiet looping tones (so the mixer has work)."""
    from streamcore import Engine

    frames = samplerate  # one second, looped
    t = _np.arange(frames, dtype=_np.float32) / samplerate
    tones = [(0.05 * _np.sin(2 * _np.pi * f * t)).astype(_np.float32) for f in (220, 330, 440)]
    with Engine(samplerate=samplerate, blocksize=blocksize, sink=sink) as engine:
        for tone in tones:  # the arrays stay alive in `tones` until the engine is closed
            engine.play(tone, loop=True)
        yield engine


def trace_session(path: str | os.PathLike[str], seconds: float, *, samplerate: int = 48000,
                  blocksize: int = 128, sink: str = "null") -> TraceSession:
    """Run a demo engine (three quiet looping tones) and write its Chrome trace.

    Parameters
    ----------
    path : str or os.PathLike
        Where the trace-event JSON goes (see :func:`write_chrome_trace`).
    seconds : float
        How long the engine runs.
    samplerate : int
        The engine's sample rate, Hz.
    blocksize : int
        Frames per period.
    sink : str
        ``"null"`` (a timer clock) or ``"device"`` (the default output device).

    Returns
    -------
    TraceSession
        The file, how many cycles it holds, the xruns and the cycles missed.

    Notes
    -----
    Blocks for ``seconds``; `streamcore trace` is this plus a line saying what was written.
    """
    with _demo_engine(samplerate, blocksize, sink) as engine:
        recorder = TraceRecorder(engine)
        records = recorder.run(seconds, every=min(1.0, 4000 * engine.period_ns / 1e9))
        stats = engine.stats()
        meta = {"samplerate": engine.samplerate, "blocksize": engine.blocksize,
                "sink": engine.sink_name, "grant": str(engine.grant),
                "missed_cycles": recorder.missed,
                "taints": sorted(stats.taints)}
        timestamps = getattr(engine.sink, "timestamps", None)
        written = write_chrome_trace(path, records, engine.events(), origin_ns=stats.start_ns,
                                     mixer_tid=engine.mixer_tid, metadata=meta,
                                     device=timestamps() if timestamps else None)
        return TraceSession(written, len(records), stats.xruns, recorder.missed)


def top_session(seconds: float | None = None, interval: float = 0.25, *, samplerate: int = 48000,
                blocksize: int = 128, sink: str = "null",
                out: TextIO | None = None) -> EngineStats:
    """Run a demo engine (three quiet looping tones) under :func:`top`.

    Parameters
    ----------
    seconds : float or None
        How long; None: until Ctrl-C.
    interval : float
        Seconds between refreshes.
    samplerate : int
        The engine's sample rate, Hz.
    blocksize : int
        Frames per period.
    sink : str
        ``"null"`` (a timer clock) or ``"device"`` (the default output device).
    out : TextIO or None
        Where the screens go; None: stdout.

    Returns
    -------
    EngineStats
        The last readout.
    """
    with _demo_engine(samplerate, blocksize, sink) as engine:
        return top(engine, seconds=seconds, interval=interval, out=out)
