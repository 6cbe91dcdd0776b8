"""The realtime mixing engine: ``streamcore.Engine``.

An engine owns a C mixer (native/mixer.c) that mixes voices into an output ring of
``periods`` periods of ``blocksize`` frames, clocked by its sink:

- ``sink='null'``: a C thread wakes on CLOCK_MONOTONIC every period (timer clock), discards
  one period (the null sink) and renders the next, so the engine runs anywhere;
- ``sink='manual'``: no thread; :meth:`Engine.render` renders periods in the caller and
  returns them (offline rendering, golden tests);
- ``sink='external'``: the consumer clock.  A sink outside the engine (C code of a device or
  pipe sink, or a Python thread) reads one period at a time from :attr:`Engine.output` and
  then calls :meth:`Engine.period_consumed` (C: ``sc_engine_period_consumed``), which wakes
  the mixer at once to render the next.

Concurrency contract: every method may be called from any Python thread (commands are
serialised by a lock into the single-producer command queue).  The mixer thread never takes
the GIL.  Voices are handed back through the return queue and released on the next call that
reaps it (``play``, ``Voice.done``, ``stats``...).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno as _errno
import math
import os
import select
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as _np

from streamcore import realtime as _realtime
from streamcore import telemetry as _telemetry
from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.errors import (
    CommandQueueFullError,
    EngineClosedError,
    EngineTimeoutError,
    RepromoteRefusedError,
    StreamcoreError,
    VoiceLimitError,
    check,
)
from streamcore.ring import Ring as _Ring
from streamcore.voice import StreamVoice, Voice
from streamcore.watchdog import Event, Watchdog

if TYPE_CHECKING:
    from streamcore.sinks.base import Sink

__all__ = ["MAX_VOICES", "Engine"]

MAX_VOICES = _lib.SC_MAX_VOICES

_FORMATS = {"float32": _lib.SC_FORMAT_F32, "int16": _lib.SC_FORMAT_S16,
            "int32": _lib.SC_FORMAT_S32}
_SINKS = ("null", "manual", "external", "device")


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
    return cast(float, value)  # converted by float() above


class Engine:
    """A mixing engine.  ``with Engine(...) as engine:`` starts it; leaving stops and closes.

    Parameters
    ----------
    samplerate : int
        Hz, 8000 .. 384000.
    blocksize : int
        Frames per period, 16 .. 8192.
    channels : int
        Output channels, 1 .. 32.
    periods : int
        Periods in the output ring, 2 .. 8192 (a sink object may impose its own).
    sink : str or Sink
        'null' (a C timer thread clocks the engine and discards the output), 'manual' (no
        thread: :meth:`render`), 'external' (the consumer clock: see
        :meth:`period_consumed`), 'device' (the default output device), or a
        :class:`streamcore.sinks.Sink`, which runs on the consumer clock like 'external'.
    dtype : str or None
        Output samples: 'float32', 'int16' or 'int32'; None: what the sink carries, else
        float32.
    realtime : bool
        Acquire realtime for the mixer at ``priority`` when started.  Refused, unavailable or
        False: the engine runs at normal priority with the RT_DENIED taint.
    priority : int
        The mixer's realtime priority, 1 .. 98 (the watchdog runs one above).
    lock_memory : bool
        mlock the engine's memory and rings; a failure sets the MLOCK_FAILED taint.
    watchdog : Watchdog, bool or None
        The watchdog's settings; None or True: the defaults; False: no watchdog.
    dither : bool
        int16 output only: TPDF dither of ±1 LSB before rounding.

    Raises
    ------
    TypeError
        A number of the wrong type, an unknown ``dtype``, or ``watchdog`` of the wrong type.
    ValueError
        A number out of its range, an unknown ``sink``, ``dither`` without int16, or a
        ``dtype`` the sink object cannot carry.
    NativeError
        The C engine could not be created (memory).

    Notes
    -----
    Build, use and close an engine from any Python thread: every method serialises on one
    lock.  The realtime mixer thread, its watchdog and its canary are C threads started by
    :meth:`start`; they never take the GIL.  Closing is idempotent; an engine collected while
    open warns (ResourceWarning).  After fork the child's copies are marked closed.
    """

    _engine = _ffi.NULL  # class-level NULL: close() is safe after a failed __init__
    _subscriber_thread: threading.Thread | None = None

    def __init__(self, samplerate: int = 48000, blocksize: int = 128, channels: int = 2,
                 periods: int = 2, sink: Any = "null", dtype: str | None = None,
                 realtime: bool = True, priority: int = 10, lock_memory: bool = True,
                 watchdog: Watchdog | bool | None = None, dither: bool = False) -> None:
        samplerate = _positive_int("samplerate", samplerate, _lib.SC_MIN_SAMPLERATE,
                                   _lib.SC_MAX_SAMPLERATE)
        blocksize = _positive_int("blocksize", blocksize, _lib.SC_MIN_BLOCKSIZE,
                                  _lib.SC_MAX_BLOCKSIZE)
        channels = _positive_int("channels", channels, 1, _lib.SC_MAX_CHANNELS)
        periods = _positive_int("periods", periods, 2, _lib.SC_MAX_PERIODS)
        priority = _positive_int("priority", priority, 1, 98)
        sink, self.sink_object = _sink_hook(sink)
        if self.sink_object is not None:
            dtype, periods = _sink_format(self.sink_object, blocksize, channels, dtype, periods)
        dtype = "float32" if dtype is None else dtype
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
        self.grant: _realtime.RealtimeGrant | None = None  #: mixer's grant (None: not started/off)
        self.watchdog_grant: _realtime.RealtimeGrant | None = None  #: the watchdog thread's grant
        self.output: _Ring | None = None  #: the output Ring (null sink), None for 'manual'

        config = _ffi.new("sc_engine_config *")
        config.samplerate, config.blocksize = samplerate, blocksize
        config.channels, config.periods = channels, periods
        config.format = _FORMATS[dtype]
        manual = sink == "manual"
        config.clock = {"manual": _lib.SC_CLOCK_MANUAL, "null": _lib.SC_CLOCK_TIMER,
                        "external": _lib.SC_CLOCK_CONSUMER}[sink]
        config.lock_memory = 1 if lock_memory else 0
        if dither and dtype != "int16":
            raise ValueError("dither is for int16 output")
        config.dither = 1 if dither else 0
        self.dither = bool(dither)
        watchdog._fill(config, self.period_ns)
        if manual:
            config.watchdog = 0
        out = _ffi.new("sc_engine **")
        check(_lib.sc_engine_create(out, config), "sc_engine_create")
        self._engine = out[0]
        _engines.add(self)

        self._lock = threading.RLock()
        self._free = collections.deque(range(MAX_VOICES))
        self._generations = [0] * MAX_VOICES
        self._voices: dict[int, Voice] = {}
        self._events: list[Event] = []
        self._subscribers: list[Any] = []
        self._last_demotion: int | None = None
        self._started = False
        self._closed = False
        self._stream_rings: list[Any] = []
        self._sink_opened = False
        self._snapshot_token = 0
        self._subscriber_thread: threading.Thread | None = None
        self._subscriber_stop = (-1, -1)
        self.mixer_tid = self.watchdog_tid = self.canary_tid = 0  #: kernel tids, once started
        self._cmd = _ffi.new("sc_command *")      # reused under _lock
        self._ret = _ffi.new("sc_voice_return *")  # reused under _lock

    # ---- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
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
        """True once :meth:`close` ran; every later call raises EngineClosedError.

        Notes
        -----
        Any thread.
        """
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("the engine is closed; create a new Engine")

    def start(self) -> None:
        """Start the mixer thread, its watchdog and canary, and acquire realtime for the mixer.

        Idempotent; nothing to start for the 'manual' sink.  Pairs with :meth:`stop`.  The
        output ring is made on the first start and the sink object, if any, is opened and
        started.

        Raises
        ------
        EngineClosedError
            The engine is closed.
        NativeError
            The C threads could not be started.
        StreamcoreError
            What the sink object's ``open`` or ``start`` raises (e.g.
            :class:`~streamcore.errors.NoDeviceError`, :class:`~streamcore.errors.SinkError`),
            after the sink is closed or the engine stopped again.

        Notes
        -----
        Any Python thread, not the audio path: it may block on the system bus for up to 2 s
        per thread promoted.  The mixer's kernel tid goes to
        :func:`~streamcore.realtime.acquire_realtime` (the grant is kept as ``grant``), the
        watchdog's at one priority above.  If the mixer does not end up realtime the engine
        runs anyway, at normal priority, with the RT_DENIED taint (``grant.reasons`` says
        why).
        """
        with self._lock:
            self._check_open()
            if self._started or self.sink == "manual":
                return
            if self.output is None:
                self.output = self._make_output()
            self._open_sink()
            driver = self.sink_object.native_driver() if self.sink_object is not None else None
            check(_lib.sc_engine_start(self._engine, self.output._ring,
                                       _ffi.NULL if driver is None else driver),
                  "starting the mixer")
            self._started = True
            self.mixer_tid, self.watchdog_tid, self.canary_tid = _tids(self._engine)
            self._acquire_realtime()
            self._start_sink()

    def _make_output(self) -> _Ring:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unlocked ring is reported as a taint instead
            ring = _Ring(self.periods * self.blocksize, self.channels, self.dtype.name,
                        lock="try" if self.lock_memory else False, name="engine-output")
        if self.lock_memory and not ring.locked:
            _lib.sc_engine_taint(self._engine, _lib.SC_TAINT_MLOCK_FAILED)
        return ring

    def _acquire_realtime(self) -> None:
        if not self.realtime:
            self.grant = None
            _lib.sc_engine_taint(self._engine, _lib.SC_TAINT_RT_DENIED)
            return
        self.grant = _realtime.acquire_realtime(tid=self.mixer_tid, priority=self.priority)
        if not self.grant.realtime:
            _lib.sc_engine_taint(self._engine, _lib.SC_TAINT_RT_DENIED)
        if self.watchdog_tid:
            self.watchdog_grant = _realtime.acquire_realtime(
                tid=self.watchdog_tid, priority=min(self.priority + 1, 99))

    def stop(self) -> None:
        """Stop the sink and the threads, then hand every voice back; pairs with :meth:`start`.

        Idempotent.  The sink stops consuming first, then the mixer stops, then the sink may
        drain what is left (the file sink does).  The figures stay readable until
        :meth:`close`.

        Raises
        ------
        NativeError
            The C engine refused to stop or flush.

        Notes
        -----
        Any Python thread, or a sink's own thread after it failed; joins the C threads, so
        never from the audio path.
        """
        with self._lock:
            if self._engine == _ffi.NULL:
                return
            if self._started:
                try:
                    self._stop_sink()
                finally:
                    check(_lib.sc_engine_stop(self._engine), "stopping the mixer")
                    self._started = False
                    self._drain_sink()
            check(_lib.sc_engine_flush(self._engine), "sc_engine_flush")
            self._reap()
            self._poll_events()

    def close(self) -> None:
        """Stop, then free the native engine, the output ring and the rings it made; idempotent.

        Raises
        ------
        SinkError
            The sink object reports a failure at close (e.g. the file sink's write error);
            the engine is freed all the same.

        Notes
        -----
        Any Python thread, not from a :meth:`subscribe` callback (it ends that thread
        first); joins the C threads, so never from the audio path.
        """
        self._stop_subscribers()  # first, without the lock: its thread may be waiting for it
        with self._lock:
            if self._engine == _ffi.NULL:
                self._closed = True
                return
            try:
                self.stop()
            finally:
                try:
                    self._close_sink()
                finally:
                    _lib.sc_engine_destroy(self._engine)
                    self._engine = _ffi.NULL
                    self._closed = True
                    if self.output is not None:
                        self.output.close()
                    for ring in self._stream_rings:
                        ring.close()
                    self._stream_rings.clear()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` (never for the 'manual' sink).

        Notes
        -----
        Any thread.  The mixer may have stopped on its own meanwhile (a failed sink stops
        the engine): ``stats().running`` reads the C side.
        """
        return self._started

    # ---- voices -----------------------------------------------------------------------------

    def play(self, array: Any, gain: float = 1.0, pan: float = 0.0, loop: bool = False,
             at: int | None = None, fade_in: float = 0.0) -> Voice:
        """Play ``array`` in place, from output frame ``at`` (None: the next period).

        The array is read where it is, not copied: keep it unchanged until the voice is done
        (the voice holds a reference until then).

        Parameters
        ----------
        array : numpy.ndarray
            float32, shape (frames,) or (frames, channels) with 1 or the engine's channels,
            C-contiguous, at least one frame.
        gain : float
            Linear gain, -64 .. 64.
        pan : float
            -1 (left) .. +1 (right); not 0 only on a stereo engine.
        loop : bool
            Repeat until stopped.
        at : int or None
            The output frame (the engine's frame clock, :attr:`frame`) to start at; None:
            the next period.  A frame already rendered starts at once (counted in
            ``stats().late_starts``).
        fade_in : float
            Seconds (0 .. 3600) of a linear ramp at the start.

        Returns
        -------
        Voice
            The playing voice.

        Raises
        ------
        TypeError
            ``array`` is not a float32 numpy array, or a number of the wrong type.
        ValueError
            The wrong shape or channels, no frames, not C-contiguous, or a number out of its
            range.
        EngineClosedError
            The engine is closed.
        VoiceLimitError
            All ``MAX_VOICES`` voices are busy.
        CommandQueueFullError
            The mixer took no command for 1 s (or, not started, the queue is full).

        Notes
        -----
        Any Python thread; returns at once, the realtime mixer thread starts the voice at the
        start of its next period.
        """
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

    def stream(self, channels: int = 1, frames: int | None = None, gain: float = 1.0,
               pan: float = 0.0, at: int | None = None, fade_in: float = 0.0,
               ring: _Ring | None = None) -> StreamVoice:
        """A voice that plays what is written into its ring.

        Write with ``write_view``/``commit`` or ``write`` on the returned
        :class:`StreamVoice`.  On underrun the voice plays silence, counts it
        (``stats()['underruns']``) and continues with the next frames written.

        Parameters
        ----------
        channels : int
            1 or the engine's channels; ignored when ``ring`` is given.
        frames : int or None
            The new ring's capacity in frames (1 .. 2**26); None: a quarter second, at least
            four output rings.  Ignored when ``ring`` is given.
        gain : float
            Linear gain, -64 .. 64.
        pan : float
            -1 (left) .. +1 (right); not 0 only on a stereo engine.
        at : int or None
            The output frame to start at; None: the next period.
        fade_in : float
            Seconds (0 .. 3600) of a linear ramp at the start.
        ring : Ring or None
            Play an existing float32 :class:`~streamcore.Ring` instead, e.g. one attached
            from another process's fd (its writer is then that process).  Do not close it
            while the voice plays.

        Returns
        -------
        StreamVoice
            The playing voice; its ring is :attr:`StreamVoice.ring`.

        Raises
        ------
        TypeError
            ``ring`` is not float32, or a number of the wrong type.
        ValueError
            Channels other than 1 or the engine's, a closed ``ring``, or a number out of its
            range.
        EngineClosedError
            The engine is closed.
        VoiceLimitError
            All ``MAX_VOICES`` voices are busy.
        CommandQueueFullError
            The mixer took no command for 1 s.

        Notes
        -----
        Any Python thread.  The ring has one writer (one thread, or the process holding the
        fd) and the realtime mixer thread as its reader until the voice is done.  The engine
        closes the rings it made when it closes.
        """
        self._check_open()
        if ring is None:
            channels = _positive_int("channels", channels, 1, self.channels)
            if channels not in (1, self.channels):
                raise ValueError(f"a stream voice has 1 or {self.channels} channels, "
                                 f"not {channels}")
            if frames is None:
                frames = max(self.samplerate // 4, 4 * self.periods * self.blocksize)
            frames = _positive_int("frames", frames, 1, 1 << 26)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unlocked: reported by the ring's stats
                ring = _Ring(frames, channels, "float32",
                            lock="try" if self.lock_memory else False, name="stream-voice")
            self._stream_rings.append(ring)
        else:
            if ring.closed:
                raise ValueError("the ring is closed")
            if ring.dtype != _np.float32:
                raise TypeError(f"a stream voice's ring must be float32, not {ring.dtype}")
            if ring.channels not in (1, self.channels):
                raise ValueError(f"the ring has {ring.channels} channels; the engine mixes 1 "
                                 f"or {self.channels}")
            channels = ring.channels
        voice = self._add(_lib.SC_VOICE_STREAM, ring, channels, gain, pan, at, fade_in,
                          ring_ptr=ring._ring)
        return cast(StreamVoice, voice)  # _add makes a StreamVoice for SC_VOICE_STREAM

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

    def _send(self, cmd: Any) -> None:
        """Queue one command (caller holds _lock); waits up to 1 s for room while running."""
        deadline = time.monotonic() + 1.0
        while True:
            status = _lib.sc_engine_command(self._engine, cmd)
            if status != -_errno.EAGAIN:  # full: wait for the mixer
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
        """The voices not yet handed back (a new list).

        Notes
        -----
        Any thread; reaps the voices the mixer returned first.
        """
        with self._lock:
            self._reap()
            return list(self._voices.values())

    # ---- manual clock -----------------------------------------------------------------------

    def render(self, periods: int = 1) -> _np.ndarray:
        """Render ``periods`` periods now, in the calling thread ('manual' sink only).

        Parameters
        ----------
        periods : int
            Periods to render, 0 .. 2**20.

        Returns
        -------
        numpy.ndarray
            Shape (periods * blocksize, channels), of the engine's dtype.

        Raises
        ------
        StreamcoreError
            The engine has a clock (its sink is not 'manual').
        TypeError, ValueError
            ``periods`` is not an int in range.
        EngineClosedError
            The engine is closed.
        NativeError
            The C renderer refused.

        Notes
        -----
        Any Python thread; the mixing runs in it (offline rendering, golden tests).  Commands
        sent before are applied at the start of the first period.
        """
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
        """Output frames rendered so far (the frame clock ``at`` refers to).

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread; read live, so it may be one period behind the mixer.
        """
        self._check_open()
        return _telemetry.read_stats(self._engine, {}).frames

    # ---- figures ----------------------------------------------------------------------------

    def stats(self, consistent: bool = False, timeout: float = 1.0) -> _telemetry.EngineStats:
        """Counters, histograms, taints and demotions, read live without stopping the engine.

        Parameters
        ----------
        consistent : bool
            False: the figures are read one by one while the mixer runs (two figures may be
            one cycle apart).  True (while running): the mixer is asked through the command
            queue for a copy taken at the end of one cycle (histogram counts then equal
            ``cycles`` exactly).
        timeout : float
            Seconds to wait for the mixer's copy when ``consistent``.

        Returns
        -------
        EngineStats
            The figures (``streamcore.telemetry.EngineStats``); times in ns, counts in
            periods, cycles and frames; ``sink`` holds the sink object's figures.

        Raises
        ------
        EngineClosedError
            The engine is closed.
        EngineTimeoutError
            ``consistent`` and the mixer did not answer within ``timeout``.
        CommandQueueFullError
            ``consistent`` and the mixer took no command for 1 s.

        Notes
        -----
        Any Python thread; never stops or waits for the mixer unless ``consistent``.
        """
        self._check_open()
        with self._lock:
            self._reap()
            per_voice = {}
            s = _ffi.new("sc_voice_stats *")
            for slot, voice in self._voices.items():
                if isinstance(voice, StreamVoice):
                    _lib.sc_engine_voice_stats(self._engine, slot, s)
                    per_voice[voice.id] = s.underruns
            if consistent and self._started:
                stats = _telemetry.EngineStats._from_native(self._snapshot(timeout), per_voice)
            else:
                stats = _telemetry.read_stats(self._engine, per_voice)
            if self.sink_object is not None:
                stats = dataclasses.replace(stats, sink=self.sink_object.stats())
            return stats

    def _snapshot(self, timeout: float) -> Any:
        """Ask the mixer for a one-cycle-consistent copy (caller holds _lock)."""
        self._snapshot_token = (self._snapshot_token + 1) & 0xFFFFFFFF or 1
        cmd = self._cmd
        cmd.op, cmd.slot, cmd.generation = _lib.SC_CMD_SNAPSHOT, 0, self._snapshot_token
        self._send(cmd)
        out = _ffi.new("sc_engine_stats *")
        deadline = time.monotonic() + timeout
        while _lib.sc_engine_get_snapshot(self._engine, out) != self._snapshot_token:
            if time.monotonic() > deadline:
                raise EngineTimeoutError(f"the mixer did not answer a stats request within "
                                         f"{timeout} s (stuck or demoted and starved?)")
            time.sleep(0.0005)
        return out

    def trace(self, max_records: int = _lib.SC_TRACE_SLOTS) -> _np.ndarray:
        """The most recent per-cycle records of the mixer, oldest first.

        Parameters
        ----------
        max_records : int
            Records at most (the trace keeps the last ``SC_TRACE_SLOTS``, 8192, cycles).

        Returns
        -------
        numpy.ndarray
            A copy, of ``streamcore.telemetry.TRACE_DTYPE``: times in ns (CLOCK_MONOTONIC),
            ``fill`` in frames.

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread; the mixer writes the trace without waiting for readers.
        """
        self._check_open()
        return _telemetry.read_trace(self._engine, max_records)

    def events(self) -> list[Event]:
        """Every watchdog event so far, oldest first.

        Returns
        -------
        list of Event
            ``streamcore.watchdog.Event`` records (times in ns).

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any Python thread.  See :meth:`subscribe` to be called for each new one.
        """
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
        """A file descriptor that becomes readable when the watchdog records an event.

        Select or poll it, then call :meth:`events`.  Owned by the engine: do not close it.

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread.
        """
        self._check_open()
        return cast(int, _lib.sc_engine_event_fd(self._engine))  # a C int

    def period_consumed(self, underrun: bool = False) -> None:
        """For sink='external': the sink took one period from ``output``; wakes the mixer now.

        Parameters
        ----------
        underrun : bool
            The sink found less than a period (counted as an xrun).

        Raises
        ------
        StreamcoreError
            The engine's sink is not 'external'.
        EngineClosedError
            The engine is closed.

        Notes
        -----
        The sink's thread only (the single reader of ``output``), once per period; it takes
        no lock, so it is cheap enough for a consuming loop.  A sink object's C thread calls
        ``sc_engine_period_consumed`` instead.
        """
        if self.sink != "external":
            raise StreamcoreError("period_consumed() is for sink='external'")
        self._check_open()
        _lib.sc_engine_period_consumed(self._engine, 1 if underrun else 0)

    def _test_spin(self, seconds: float, cycles: int = 1) -> None:
        """Test hook: the mixer busy-loops for ``seconds`` inside each of its next ``cycles``
        cycles (a runaway, for the watchdog's tests)."""
        self._check_open()
        _lib.sc_engine_test_spin(self._engine, int(seconds * 1e9), cycles)

    def subscribe(self, callback: Callable[[Event], object]) -> None:
        """Call ``callback(event)`` for every new watchdog event.

        Parameters
        ----------
        callback : callable
            Takes one ``streamcore.watchdog.Event``; what it returns is ignored.

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        The callbacks run in one Python thread of the engine ("streamcore-events"), which
        waits on :attr:`event_fd` and ends with :meth:`close`; a callback must not close
        the engine.  Any thread may subscribe.
        """
        self._check_open()
        with self._lock:
            self._subscribers.append(callback)
            if self._subscriber_thread is None:
                self._subscriber_stop = os.pipe()
                self._subscriber_thread = threading.Thread(
                    target=self._deliver_events, name="streamcore-events", daemon=True)
                self._subscriber_thread.start()

    def _deliver_events(self) -> None:
        fd, stop = self.event_fd, self._subscriber_stop[0]
        while True:
            readable, _, _ = select.select([fd, stop], [], [])
            if stop in readable:
                return
            with contextlib.suppress(BlockingIOError):
                os.read(fd, 8)
            with self._lock:
                if self._engine == _ffi.NULL:
                    return
                fresh = self._poll_events()
                callbacks = list(self._subscribers)
            for event in fresh:
                for callback in callbacks:
                    callback(event)

    def _stop_subscribers(self) -> None:
        thread = self._subscriber_thread
        if thread is None:
            return
        os.write(self._subscriber_stop[1], b"x")
        if thread is not threading.current_thread():
            thread.join()
        for fd in self._subscriber_stop:
            os.close(fd)
        self._subscriber_thread = None

    def repromote(self) -> _realtime.RealtimeGrant | None:
        """Acquire realtime for the mixer again after a watchdog demotion and re-arm the watchdog.

        Refused within the watchdog's ``cooldown`` of the last demotion, so a runaway cannot
        ping-pong.  The taints stay.

        Returns
        -------
        RealtimeGrant or None
            The mixer's new grant; None when the engine was made with ``realtime=False``.

        Raises
        ------
        RepromoteRefusedError
            Within ``cooldown`` seconds of the last demotion.
        StreamcoreError
            The engine is not running.
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any Python thread, not the audio path: it may block on the system bus for up to 2 s
        per thread promoted.
        """
        with self._lock:
            self._check_open()
            if not self._started:
                raise StreamcoreError("the engine is not running")
            self._poll_events()
            if self._last_demotion is not None:
                age = (time.monotonic_ns() - self._last_demotion) / 1e9
                if age < self.watchdog.cooldown:
                    raise RepromoteRefusedError(
                        f"the watchdog demoted the mixer {age:.2f} s ago; re-promotion is "
                        f"refused for {self.watchdog.cooldown} s after a demotion")
            self._acquire_realtime()  # the mixer, and the watchdog (the canary rule demotes it)
            _lib.sc_engine_rearm(self._engine)
            return self.grant


    # ---- sink objects (streamcore.sinks; the hook of the sinks branch) -----------------------
    # A Sink object runs the engine on the consumer clock ('external'): open() once the output
    # ring exists, start() once the mixer has filled it, stop() before the mixer stops,
    # drain() (optional) after it stopped, close() with the engine.  See streamcore/sinks/base.py.

    def _open_sink(self) -> None:
        if self.sink_object is None or self._sink_opened:
            return
        try:
            self.sink_object.open(self)
        except BaseException:
            self.sink_object.close()
            raise
        self._sink_opened = True

    def _start_sink(self) -> None:
        if self.sink_object is None:
            return
        try:
            self.sink_object.start()
        except BaseException:
            self.stop()
            raise

    def _stop_sink(self) -> None:
        if self.sink_object is not None and self._sink_opened:
            self.sink_object.stop()

    def _drain_sink(self) -> None:
        drain = getattr(self.sink_object, "drain", None)  # optional for sinks not on Sink
        if drain is not None and self._sink_opened:
            drain()

    def _close_sink(self) -> None:
        if self.sink_object is not None:
            self.sink_object.close()

    def _sink_failed(self, sink: Sink, abandon: threading.Event) -> None:
        """Called from a sink's own Python thread when it failed for good (``sink.error`` is
        set): stop the engine, unless ``abandon`` is set first (someone else is stopping it)."""
        while not abandon.is_set():
            if self._lock.acquire(timeout=0.05):
                try:
                    if self._engine != _ffi.NULL and sink is self.sink_object:
                        self.stop()
                finally:
                    self._lock.release()
                return


def _sink_format(sink: Sink, blocksize: int, channels: int, dtype: Any,
                 periods: int) -> tuple[Any, int]:
    """The dtype and periods a sink object needs (Sink.output_format), checked against what
    the caller asked: a dtype the sink cannot carry is an error, not a silent conversion."""
    wanted_dtype, wanted_periods = sink.output_format(blocksize, channels)
    if wanted_dtype is not None:
        if dtype is not None and _np.dtype(dtype).name != wanted_dtype:
            raise ValueError(f"{sink!r} carries {wanted_dtype}, not {_np.dtype(dtype).name}: "
                             f"leave dtype out or pass dtype={wanted_dtype!r}")
        dtype = wanted_dtype
    if wanted_periods is not None:
        periods = _positive_int("the sink's periods", wanted_periods, 2, _lib.SC_MAX_PERIODS)
    return dtype, periods


def _sink_hook(sink: Any) -> tuple[str, Any]:
    """('null' | 'manual' | 'external', Sink object or None) for ``Engine(sink=...)``."""
    from streamcore.sinks.base import Sink

    if isinstance(sink, str) and sink == "device":
        from streamcore.sinks.device import DeviceSink

        sink = DeviceSink()
    if isinstance(sink, Sink):
        return "external", sink
    if sink not in _SINKS:
        raise ValueError(f"sink must be one of {_SINKS} or a streamcore.sinks.Sink, "
                         f"not {sink!r}")
    return sink, None


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _disown_engines_in_child() -> None:
    """After fork: the child has a copy of each engine's memory but none of its threads.
    Closing the copy would join threads that do not exist, so the child's engines are only
    marked closed (the parent's engines are unaffected)."""
    for engine in list(_engines):
        engine._engine = _ffi.NULL
        engine._started = False
        engine._closed = True
        engine._lock = threading.RLock()  # a lock held by a parent thread stays held otherwise
        engine._subscriber_thread = None


os.register_at_fork(after_in_child=_disown_engines_in_child)


def _tids(engine_ptr: Any) -> tuple[int, int, int]:
    s = _ffi.new("sc_engine_stats *")
    _lib.sc_engine_get_stats(engine_ptr, s)
    return s.mixer_tid, s.watchdog_tid, s.canary_tid
