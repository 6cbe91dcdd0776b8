"""Reading the engine's telemetry: per-period trace records, histograms, statistics, taints.

The mixer thread writes all of it natively (native/telemetry.c) without ever waiting for a
reader; these functions copy it out while the engine runs.  Counters are read one by one
(relaxed), so a readout taken while the engine runs may be off by one cycle between two
figures; once the engine is stopped every figure is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as _np

from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib

__all__ = ["TAINTS", "TRACE_DTYPE", "EngineStats", "Histogram", "taint_names"]

#: Taint flags (like the kernel's): once set they stay for the engine's life.
TAINTS = {
    "RT_DENIED": _lib.SC_TAINT_RT_DENIED,
    "MLOCK_FAILED": _lib.SC_TAINT_MLOCK_FAILED,
    "WATCHDOG_DEMOTED": _lib.SC_TAINT_WATCHDOG_DEMOTED,
    "RTTIME_SIGNAL": _lib.SC_TAINT_RTTIME_SIGNAL,
    "XRUN": _lib.SC_TAINT_XRUN,
    "CLIPPED": _lib.SC_TAINT_CLIPPED,
    "NONFINITE_OUTPUT": _lib.SC_TAINT_NONFINITE_OUTPUT,
    "UNDERRUN": _lib.SC_TAINT_UNDERRUN,
    "REALTIME_LOST": _lib.SC_TAINT_REALTIME_LOST,
}

#: One record per mixer cycle (see sc_trace_record in native/streamcore.h).
TRACE_DTYPE = _np.dtype([
    ("cycle", "<u8"),
    ("wake_ns", "<i8"),      # CLOCK_MONOTONIC (time.monotonic_ns()) at wake-up
    ("late_ns", "<i8"),      # wake-up minus its deadline
    ("mix_ns", "<i8"),       # wake-up to end of the cycle's work
    ("fill", "<u4"),         # output frames buffered after the cycle
    ("voices", "<u4"),       # active voices
    ("flags", "<u4"),        # 1: xrun, 2: the mixer ran demoted, 4: it wrote a pipe (late 0)
    ("rendered", "<u4"),     # periods rendered in the cycle
])
assert TRACE_DTYPE.itemsize == _ffi.sizeof("sc_trace_record")

TRACE_XRUN = _lib.SC_TRACE_XRUN
TRACE_DEMOTED = _lib.SC_TRACE_DEMOTED
#: The mixer wrote a pipe itself in this cycle: its clock is the pipe's reader, so there is no
#: wake-up latency to measure (late_ns is 0 and the wake-up histogram leaves it out).
TRACE_PIPE = _lib.SC_TRACE_PIPE


def taint_names(bits: int) -> frozenset[str]:
    """The names of the taint flags set in ``bits``."""
    return frozenset(name for name, bit in TAINTS.items() if bits & bit)


@dataclass(frozen=True)
class Histogram:
    """A log2 histogram of nanosecond values: ``buckets[b]`` counts values in [2^b, 2^(b+1))
    (bucket 0 also holds 0 and negative values)."""

    count: int
    min_ns: int
    max_ns: int
    sum_ns: int
    buckets: tuple[int, ...]

    @property
    def mean_ns(self) -> float:
        return self.sum_ns / self.count if self.count else float("nan")

    def percentile(self, p: float) -> int:
        """An upper bound (the bucket's top edge, at most max_ns) of the p-th percentile, in ns."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be within 0..100, not {p}")
        if not self.count:
            return 0
        rank = p / 100 * self.count
        seen = 0
        for b, n in enumerate(self.buckets):
            seen += n
            if n and seen >= rank:
                return min(cast(int, 2 ** (b + 1)) - 1, self.max_ns)  # b >= 0: an int
        return self.max_ns

    @classmethod
    def _from_native(cls, count: Any, lo: Any, hi: Any, total: Any,
                     buckets: Any) -> Histogram:
        values = tuple(int(b) for b in buckets)
        if not count:
            lo = hi = 0
        return cls(int(count), int(lo), int(hi), int(total), values)


@dataclass(frozen=True)
class EngineStats:
    """One readout of the engine's figures (``Engine.stats()``)."""

    periods: int          #: periods rendered (the initial fill of the output ring included)
    cycles: int           #: mixer wake-ups (each one is in the histograms and the trace)
    consumed: int         #: periods taken by the sink
    skipped: int          #: timer periods missed because the mixer woke more than a period late
    xruns: int            #: cycles in which the sink was short of a full period
    frames: int           #: output frames rendered: the engine's frame clock
    clips: int            #: output samples outside [-1, 1]
    nans: int             #: voice blocks silenced because the source held NaN or Inf
    underruns: int        #: stream-voice underruns, all voices together
    late_starts: int      #: voices whose ``at`` frame had already been rendered
    commands: int         #: commands the mixer applied
    overruns: int         #: cycles longer than the watchdog's budget
    sigxcpu: int          #: SIGXCPU signals caught (soft RLIMIT_RTTIME)
    demotions: int        #: watchdog demotions
    voices: int           #: active voices
    fill: int             #: output frames buffered after the last cycle
    running: bool
    start_ns: int         #: the timer clock's origin (CLOCK_MONOTONIC ns)
    wake_latency: Histogram
    mix_time: Histogram
    taints: frozenset[str]
    underruns_per_voice: dict[int, int] = field(default_factory=dict)  #: voice id -> underruns
    sink: dict[str, Any] = field(default_factory=dict)  #: the sink object's figures (Sink.stats())
    #: output samples the mix made Inf/NaN (finite sources whose gains and sums overflowed):
    #: written as 0, and the NONFINITE_OUTPUT taint set
    output_nonfinite: int = 0
    driver_error: int = 0  #: errno that ended the mixer's driver on its own (EPIPE...), or 0
    #: ``Engine(input_channels=N)``: the input side's figures (frames handed on, gaps, the
    #: tap's overflows; the device's own input counts are in :attr:`sink`); else empty
    input: dict[str, Any] = field(default_factory=dict)
    #: times the watchdog found the mixer's realtime policy taken by someone else (rtkit's
    #: canary, chrt): each one an event 'lost_realtime' and the REALTIME_LOST taint
    realtime_losses: int = 0
    #: ``Engine(reacquire=...)``: realtime asked for again after a loss, and how that went
    #: (attempts, regained, the last grant's method and reasons); else empty
    reacquire: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _from_native(cls, s: Any, underruns_per_voice: dict[int, int]) -> EngineStats:
        """From an ``sc_engine_stats *``."""
        return cls(
            periods=s.periods, cycles=s.cycles, consumed=s.consumed, skipped=s.skipped,
            xruns=s.xruns, frames=s.frames, clips=s.clipped, nans=s.nonfinite,
            underruns=s.underruns, late_starts=s.late_starts, commands=s.commands,
            overruns=s.overruns, sigxcpu=s.sigxcpu, demotions=s.demotions,
            realtime_losses=s.realtime_losses, voices=s.voices,
            fill=s.fill, running=bool(s.running), start_ns=s.start_ns,
            wake_latency=Histogram._from_native(sum(s.late_hist), s.late_min, s.late_max,
                                                s.late_sum, s.late_hist),
            mix_time=Histogram._from_native(sum(s.mix_hist), s.mix_min, s.mix_max, s.mix_sum,
                                            s.mix_hist),
            taints=taint_names(s.taints),
            underruns_per_voice=underruns_per_voice,
            output_nonfinite=s.output_nonfinite, driver_error=s.driver_error,
        )

    @property
    def glitches(self) -> dict[str, int]:
        """Every glitch of the run, by where it happened: 'mixer' (cycles short of a period:
        :attr:`xruns`), 'device' (the server's xruns: JACK's xrun notifications, or the
        missed cycles of PipeWire's profiler, else PortAudio's under/overflow flags),
        'device_ring' (device callbacks that found the output ring short) and 'voices'
        (stream-voice underruns); with an input, 'input' (captured frames the engine lost:
        the capture's and the tap's overflows; the device's own input flags are the
        server's xruns, counted in 'device').  The CLI's live line
        and its final figures read these."""
        sink = self.sink
        device = int(sink.get("xruns", 0) or 0)
        if sink.get("server_xruns") is not None:
            # The server's own count, once each: JACK's xrun notifications, or the cycles
            # PipeWire's profiler saw missed (the device sink says which).
            device = int(sink["server_xruns"])
        elif sink.get("host_period") and "xrun_frames" in sink:
            # The server flags every callback of a cycle that xran: count cycles, not calls.
            device = -(-int(sink["xrun_frames"]) // int(sink["host_period"]))
        found = {"mixer": self.xruns, "device": device,
                 "device_ring": int(sink.get("underruns", 0) or 0), "voices": self.underruns}
        if self.input:
            found["input"] = (int(sink.get("input_overflows", 0) or 0)
                              + int(self.input.get("tap_overflows", 0)))
        return found

    @property
    def clean(self) -> bool:
        """True when no taint is set: the run's numbers can be trusted as they are."""
        return not self.taints

    def __str__(self) -> str:
        taints = ",".join(sorted(self.taints)) or "none"
        return (f"periods={self.periods} cycles={self.cycles} xruns={self.xruns} "
                f"underruns={self.underruns} clips={self.clips} nans={self.nans} "
                f"voices={self.voices} fill={self.fill} "
                f"wake p99={self.wake_latency.percentile(99) / 1e3:.1f}µs "
                f"mix p99={self.mix_time.percentile(99) / 1e3:.1f}µs "
                f"demotions={self.demotions} taints={taints}")


def frames_taken(engine_ptr: Any, output: Any) -> int:
    """Frames of the engine's current run its consumer has taken out of ``output`` (the
    engine's output Ring) so far."""
    stats = _ffi.new("sc_engine_stats *")
    _lib.sc_engine_get_stats(engine_ptr, stats)
    return max(0, int(stats.run_frames) - int(output.readable))


def read_stats(engine_ptr: Any, underruns_per_voice: dict[int, int]) -> EngineStats:
    """Copy the native aggregates of ``engine_ptr`` (an ``sc_engine *``), live."""
    s = _ffi.new("sc_engine_stats *")
    _lib.sc_engine_get_stats(engine_ptr, s)
    return EngineStats._from_native(s, underruns_per_voice)


def read_trace(engine_ptr: Any, max_records: int = _lib.SC_TRACE_SLOTS) -> _np.ndarray:
    """The most recent per-cycle records, oldest first, as a TRACE_DTYPE array (a copy)."""
    out = _np.zeros(max_records, dtype=TRACE_DTYPE)
    buf = _ffi.cast("sc_trace_record *", _ffi.from_buffer(out))
    n = _lib.sc_engine_trace(engine_ptr, buf, max_records)
    return out[:n].copy()
