"""The realtime mixing engine: ``streamcore.Engine``.

An engine owns a C mixer (native/mixer.c) that mixes voices into an output ring of
``periods`` periods of ``blocksize`` frames, clocked by its sink:

- ``sink='null'``: a C thread wakes on CLOCK_MONOTONIC every period (timer clock), discards
  one period (the null sink) and renders the next, so the engine runs anywhere;
- ``sink='manual'``: no thread; :meth:`Engine.render` renders periods in the caller and
  returns them (offline rendering, golden tests).

Concurrency contract: every method may be called from any Python thread (commands are
serialised by a lock into the single-producer command queue).  The mixer thread never takes
the GIL.  Voices are handed back through the return queue and released on the next call that
reaps it (``play``, ``Voice.done``, ``stats``...).
"""

from __future__ import annotations

import collections
import math
import os
import select
import threading
import time
import warnings
from typing import Any

import numpy as _np

from streamcore import telemetry as _telemetry
from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.errors import (
    CommandQueueFullError,
    EngineClosedError,
    RepromoteRefusedError,
    StreamcoreError,
    VoiceLimitError,
    check,
)
from streamcore.voice import StreamVoice, Voice
from streamcore.watchdog import Event, Watchdog

__all__ = ["MAX_VOICES", "Engine"]

MAX_VOICES = _lib.SC_MAX_VOICES

_FORMATS = {"float32": _lib.SC_OUT_F32, "int16": _lib.SC_OUT_S16, "int32": _lib.SC_OUT_S32}
_SINKS = ("null", "manual")


def _positive_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | _np.integer):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be within {lo}..{hi}, not {value}")
    return int(value)


def _finite(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | _np.floating | _np.integer):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be within {lo}..{hi}, not {value}")
    return value


class Engine:
    """A mixing engine.  ``with Engine(...) as engine:`` starts it; leaving stops and closes.

    Parameters: ``samplerate`` (8000..384000), ``blocksize`` (frames per period, 16..8192),
    ``channels`` (1..32), ``periods`` (periods in the output ring, >= 2), ``sink`` ('null' or
    'manual'), ``dtype`` of the output ('float32', 'int16', 'int32'), ``realtime`` (acquire
    realtime for the mixer at ``priority``; refused or unavailable: the engine runs at normal
    priority with the RT_DENIED taint), ``lock_memory`` (mlock; failure: MLOCK_FAILED taint),
    ``watchdog`` (a :class:`Watchdog`, or None for the defaults, or False for none).
    """

    _engine = _ffi.NULL  # class-level NULL: close() is safe after a failed __init__

    def __init__(self, samplerate: int = 48000, blocksize: int = 128, channels: int = 2,
                 periods: int = 2, sink: str = "null", dtype: str = "float32",
                 realtime: bool = True, priority: int = 10, lock_memory: bool = True,
                 watchdog: Watchdog | bool | None = None) -> None:
        samplerate = _positive_int("samplerate", samplerate, _lib.SC_MIN_SAMPLERATE,
                                   _lib.SC_MAX_SAMPLERATE)
        blocksize = _positive_int("blocksize", blocksize, _lib.SC_MIN_BLOCKSIZE,
                                  _lib.SC_MAX_BLOCKSIZE)
        channels = _positive_int("channels", channels, 1, _lib.SC_MAX_CHANNELS)
        periods = _positive_int("periods", periods, 2, 64)
        priority = _positive_int("priority", priority, 1, 98)
        if sink not in _SINKS:
            raise ValueError(f"sink must be one of {_SINKS}, not {sink!r}")
        dtype = _np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        if dtype not in _FORMATS:
            raise TypeError(f"dtype must be one of {tuple(_FORMATS)}, not {dtype!r}")
        if watchdog is None or watchdog is True:
            watchdog = Watchdog()
        elif watchdog is False:
            watchdog = Watchdog(enabled=False)
        elif not isinstance(watchdog, Watchdog):
            raise TypeError(f"watchdog must be a Watchdog, None or False, not {watchdog!r}")

        self.samplerate = samplerate
        self.blocksize = blocksize
        self.channels = channels
        self.periods = periods
        self.sink = sink
        self.dtype = _np.dtype(dtype)
        self.realtime = bool(realtime)
        self.priority = priority
        self.lock_memory = bool(lock_memory)
        self.watchdog = watchdog
        self.period_ns = blocksize * 1_000_000_000 // samplerate
        self.grant = None            #: the mixer's RealtimeGrant (None before start/if off)
        self.watchdog_grant = None   #: the watchdog thread's RealtimeGrant
        self.output = None           #: the output Ring (null sink), None for 'manual'

        config = _ffi.new("sc_engine_config *")
        config.samplerate, config.blocksize = samplerate, blocksize
        config.channels, config.periods = channels, periods
        config.format = _FORMATS[dtype]
        manual = sink == "manual"
        config.clock = _lib.SC_CLOCK_MANUAL if manual else _lib.SC_CLOCK_TIMER
        config.sink = _lib.SC_SINK_NONE if manual else _lib.SC_SINK_NULL
        config.lock_memory = 1 if lock_memory else 0
        watchdog._fill(config, self.period_ns)
        if manual:
            config.watchdog = 0
        out = _ffi.new("sc_engine **")
        check(_lib.sc_engine_create(out, config), "sc_engine_create")
        self._engine = out[0]

        self._lock = threading.RLock()
        self._free = collections.deque(range(MAX_VOICES))
        self._generations = [0] * MAX_VOICES
        self._voices: dict[int, Voice] = {}
        self._events: list[Event] = []
        self._subscribers: list[Any] = []
        self._last_demotion = None
        self._started = False
        self._closed = False
        self._cmd = _ffi.new("sc_command *")      # reused under _lock
        self._ret = _ffi.new("sc_voice_return *")  # reused under _lock

    # ---- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if self._engine != _ffi.NULL:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2)
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._started else "stopped"
        return (f"<Engine {state} {self.samplerate} Hz, {self.blocksize} frames x "
                f"{self.periods}, {self.channels} ch, {self.dtype.name}, sink={self.sink}>")

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed; create a new Engine")

    def start(self) -> None:
        """Start the mixer (idempotent; nothing to start for the 'manual' sink)."""
        self._check_open()

    def stop(self) -> None:
        """Stop the mixer and hand every voice back (idempotent)."""
        with self._lock:
            if self._engine == _ffi.NULL:
                return
            check(_lib.sc_engine_flush(self._engine), "sc_engine_flush")
            self._reap()

    def close(self) -> None:
        """Stop, then free the native engine (idempotent)."""
        with self._lock:
            if self._engine == _ffi.NULL:
                self._closed = True
                return
            self.stop()
            _lib.sc_engine_destroy(self._engine)
            self._engine = _ffi.NULL
            self._closed = True

    # ---- voices -----------------------------------------------------------------------------

    def play(self, array, gain: float = 1.0, pan: float = 0.0, loop: bool = False,
             at: int | None = None, fade_in: float = 0.0) -> Voice:
        """Play ``array`` (float32, shape (frames,) or (frames, channels) with 1 or the engine's
        channels, C-contiguous) in place, from output frame ``at`` (None: the next period).

        The array is read where it is, not copied: keep it unchanged until the voice is done
        (the voice holds a reference until then).  ``fade_in`` seconds ramp the start."""
        self._check_open()
        if not isinstance(array, _np.ndarray):
            raise TypeError(f"array must be a numpy array, not {type(array).__name__}")
        if array.dtype != _np.float32:
            raise TypeError(f"array must be float32, not {array.dtype} "
                            "(convert with array.astype(numpy.float32))")
        if array.ndim == 1:
            voice_channels = 1
        elif array.ndim == 2:
            voice_channels = array.shape[1]
        else:
            raise ValueError(f"array must have shape (frames,) or (frames, channels), "
                             f"not {array.shape}")
        if voice_channels not in (1, self.channels):
            raise ValueError(f"array has {voice_channels} channels; the engine mixes 1 or "
                             f"{self.channels}")
        if array.shape[0] == 0:
            raise ValueError("array has no frames")
        if not array.flags.c_contiguous:
            raise ValueError("array must be C-contiguous (numpy.ascontiguousarray(array)); "
                             "voices read it in place")
        loop = bool(loop)
        return self._add(_lib.SC_VOICE_BUFFER, array, voice_channels, gain, pan, at, fade_in,
                         loop=loop, frames=array.shape[0])

    def _check_gain_pan(self, gain: float, pan: float, voice_channels: int) -> tuple[float, float]:
        gain = _finite("gain", gain, -64.0, 64.0)
        pan = _finite("pan", pan, -1.0, 1.0)
        if pan != 0.0 and self.channels != 2:
            raise ValueError(f"pan needs a stereo engine (this one has {self.channels} channels)")
        return gain, pan

    def _add(self, kind: int, source: Any, voice_channels: int, gain: float, pan: float,
             at: int | None, fade_in: float, loop: bool = False, frames: int = 0,
             ring_ptr: Any = _ffi.NULL, data_ptr: Any = None) -> Voice:
        gain, pan = self._check_gain_pan(gain, pan, voice_channels)
        if at is not None:
            at = _positive_int("at", at, 0, 2**62)
        fade_frames = round(_finite("fade_in", fade_in, 0.0, 3600.0) * self.samplerate)
        with self._lock:
            self._check_open()
            self._reap()
            if not self._free:
                raise VoiceLimitError(f"all {MAX_VOICES} voices are busy: stop one or wait "
                                      "for one to finish")
            slot = self._free[0]
            generation = (self._generations[slot] + 1) & 0xFFFFFFFF
            cls = StreamVoice if kind == _lib.SC_VOICE_STREAM else Voice
            voice = cls(self, slot, generation, source, voice_channels, gain, pan)
            cmd = self._cmd
            cmd.op = _lib.SC_CMD_ADD
            cmd.slot, cmd.generation, cmd.kind = slot, generation, kind
            cmd.channels, cmd.loop, cmd.frames = voice_channels, int(loop), frames
            if kind == _lib.SC_VOICE_BUFFER:
                # The mixer reads the array's memory until it returns the voice; `voice`
                # keeps the array alive until then.
                cmd.data = _ffi.cast("const float *", _ffi.from_buffer(source))
            else:
                cmd.data = _ffi.NULL
            cmd.ring = ring_ptr
            cmd.start_frame = -1 if at is None else at
            cmd.fade_frames = fade_frames
            cmd.gain, cmd.pan = gain, pan
            self._send(cmd)
            self._free.popleft()
            self._generations[slot] = generation
            self._voices[slot] = voice
            return voice

    def _send(self, cmd) -> None:
        """Queue one command (caller holds _lock); waits up to 1 s for room while running."""
        deadline = time.monotonic() + 1.0
        while True:
            status = _lib.sc_engine_command(self._engine, cmd)
            if status != -11:  # -EAGAIN: full
                check(status, "sc_engine_command")
                return
            if not self._started or time.monotonic() > deadline:
                raise CommandQueueFullError(
                    "the mixer's command queue is full"
                    + ("" if self._started else " (render periods to apply commands)"))
            time.sleep(0.001)

    def _set_gain_pan(self, voice: Voice, gain: float, pan: float) -> None:
        gain, pan = self._check_gain_pan(gain, pan, voice.channels)
        with self._lock:
            if voice._done.is_set() or self._engine == _ffi.NULL:
                return
            cmd = self._cmd
            cmd.op, cmd.slot, cmd.generation = _lib.SC_CMD_SET, voice._slot, voice._generation
            cmd.gain, cmd.pan = gain, pan
            self._send(cmd)

    def _stop_voice(self, voice: Voice, fade: float) -> None:
        fade_frames = round(_finite("fade", fade, 0.0, 3600.0) * self.samplerate)
        with self._lock:
            if voice._done.is_set() or self._engine == _ffi.NULL:
                return
            cmd = self._cmd
            cmd.op, cmd.slot, cmd.generation = _lib.SC_CMD_STOP, voice._slot, voice._generation
            cmd.fade_frames = fade_frames
            self._send(cmd)

    def _voice_stats(self, voice: Voice) -> dict[str, int]:
        with self._lock:
            if voice._done.is_set() or self._engine == _ffi.NULL:
                return {"frames_played": voice.frames_played, "underruns": voice.underruns,
                        "underrun_frames": getattr(voice, "underrun_frames", 0),
                        "nans": voice.nans}
            s = _ffi.new("sc_voice_stats *")
            check(_lib.sc_engine_voice_stats(self._engine, voice._slot, s), "voice stats")
            return {"frames_played": s.frames_played, "underruns": s.underruns,
                    "underrun_frames": s.underrun_frames, "nans": s.nonfinite}

    def _reap(self) -> int:
        """Release the voices the mixer handed back; returns how many."""
        n = 0
        with self._lock:
            if self._engine == _ffi.NULL:
                return 0
            ret = self._ret
            while _lib.sc_engine_poll_return(self._engine, ret):
                voice = self._voices.get(ret.slot)
                if voice is not None and voice._generation == ret.generation:
                    del self._voices[ret.slot]
                    self._free.append(ret.slot)
                    voice._finish(ret)
                    n += 1
        return n

    @property
    def voices(self) -> list[Voice]:
        """The voices not yet handed back."""
        with self._lock:
            self._reap()
            return list(self._voices.values())

    # ---- manual clock -----------------------------------------------------------------------

    def render(self, periods: int = 1) -> _np.ndarray:
        """Render ``periods`` periods now, in this thread ('manual' sink only): an array of
        shape (periods*blocksize, channels) of the engine's dtype."""
        self._check_open()
        if self.sink != "manual":
            raise StreamcoreError("render() is for sink='manual'; this engine has a clock")
        periods = _positive_int("periods", periods, 0, 1 << 20)
        out = _np.zeros((periods * self.blocksize, self.channels), dtype=self.dtype)
        with self._lock:
            check(_lib.sc_engine_render(self._engine, _ffi.from_buffer(out), periods),
                  "sc_engine_render")
            self._reap()
        return out

    @property
    def frame(self) -> int:
        """Output frames rendered so far (the frame clock ``at`` refers to)."""
        self._check_open()
        return _telemetry.read_stats(self._engine, {}).frames

    # ---- figures ----------------------------------------------------------------------------

    def stats(self) -> _telemetry.EngineStats:
        """Counters, histograms, taints and demotions, read live (see EngineStats)."""
        self._check_open()
        with self._lock:
            self._reap()
            per_voice = {}
            s = _ffi.new("sc_voice_stats *")
            for slot, voice in self._voices.items():
                if isinstance(voice, StreamVoice):
                    _lib.sc_engine_voice_stats(self._engine, slot, s)
                    per_voice[voice.id] = s.underruns
            return _telemetry.read_stats(self._engine, per_voice)

    def trace(self, max_records: int = _lib.SC_TRACE_SLOTS) -> _np.ndarray:
        """The most recent per-cycle records (oldest first), a telemetry.TRACE_DTYPE array."""
        self._check_open()
        return _telemetry.read_trace(self._engine, max_records)

    def events(self) -> list[Event]:
        """Every watchdog event so far (oldest first)."""
        self._check_open()
        with self._lock:
            self._poll_events()
            return list(self._events)

    def _poll_events(self) -> list[Event]:
        fresh = []
        ev = _ffi.new("sc_event *")
        while _lib.sc_engine_poll_event(self._engine, ev):
            event = Event._from_native(ev)
            fresh.append(event)
            self._last_demotion = event.time_ns
        self._events.extend(fresh)
        return fresh

    @property
    def event_fd(self) -> int:
        """A file descriptor that becomes readable when the watchdog records an event
        (select/poll it, then call :meth:`events`)."""
        self._check_open()
        return _lib.sc_engine_event_fd(self._engine)

    def repromote(self) -> None:
        """Ask for realtime again after a demotion; refused within the watchdog's cool-down."""
        self._check_open()
        raise RepromoteRefusedError("the engine has no realtime thread to re-promote")


_ = (os, select)  # used by the threaded engine
