"""The realtime mixing engine: ``streamcore.Engine``, a thin facade over its parts.

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

The parts: :class:`~streamcore.voice.VoiceTable` (voice slots, commands, the pins that keep
what the mixer reads alive), :class:`~streamcore.events.EventLog` (watchdog events and
subscribers), and the sink object, which sees only a
:class:`~streamcore.sinks.base.SinkContext`.

Concurrency contract: every method may be called from any Python thread, also while another
thread closes the engine.  One lock serialises them; the closed check and the native call it
guards are made under it, and after :meth:`Engine.close` began every method raises
:class:`~streamcore.errors.EngineClosedError`.  The mixer thread never takes the GIL.  Voices
are handed back through the return queue and released on the next call that reaps it
(``play``, ``Voice.done``, ``stats``...).

Engines still open when the interpreter exits are stopped and freed by an exit hook (with a
ResourceWarning) before modules are torn down, so a script that ends or raises with an
engine playing exits normally.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as _np

from streamcore import latency as _latency
from streamcore import producer as _producer
from streamcore import reacquire as _reacquire
from streamcore import realtime as _realtime
from streamcore import telemetry as _telemetry
from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.capture import CAPTURE_FRAMES as _CAPTURE_FRAMES
from streamcore.capture import Capture, InputWriter, Recording
from streamcore.errors import (
    EngineClosedError,
    EngineTimeoutError,
    LoopbackNotFoundError,
    RepromoteRefusedError,
    SinkError,
    StreamcoreError,
    check,
)
from streamcore.events import EventLog
from streamcore.latency import Latency
from streamcore.pipes import writable_fd
from streamcore.ring import Ring as _Ring
from streamcore.voice import (
    MAX_VOICES,
    MixerProgress,
    StreamVoice,
    Voice,
    VoiceTable,
    finite,
    positive_int,
)
from streamcore.watchdog import Event, Watchdog

if TYPE_CHECKING:
    from streamcore.sinks.base import Sink, SinkContext

__all__ = ["MAX_VOICES", "Engine"]

# Sink.timing -> what the engine renders while nothing plays (native/streamcore.h).
_TIMINGS = {"clock": _lib.SC_CONTENT_CLOCK, "reader": _lib.SC_CONTENT_ONLY,
            "paced": _lib.SC_CONTENT_PACED}
_FORMATS = {"float32": _lib.SC_FORMAT_F32, "int16": _lib.SC_FORMAT_S16,
            "int32": _lib.SC_FORMAT_S32}
_SINKS = ("null", "manual", "external", "device")
_CLOSED = "the engine is closed; create a new Engine"
_PLAYREC_TRIES = 3  # runs of measure_latency/playrec before a device glitch is raised


class _Glitched(SinkError):
    """A play-and-record run the device glitched in (tried again)."""


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
        A sink object serves one engine at a time, until that engine is closed.
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
    input_channels : int
        0 (play only), or 1 .. 32: the device stream is full duplex and captures this many
        channels (see :meth:`record`, :attr:`input`, :attr:`input_frame`).  Needs a sink
        that captures: 'device' or a :class:`~streamcore.sinks.DeviceSink`.
    reacquire : str
        When someone else takes the mixer's realtime away while it runs (rtkit's canary
        after a suspend, an admin's ``chrt``; the watchdog sees it, an event
        ``lost_realtime`` and the REALTIME_LOST taint say so): 'never' (report only),
        'once' (ask again once, a second later) or 'backoff' (ask again at 1, 2, 4 ... up to
        300 s apart until granted: rtkit refuses for 5 minutes after its canary fired, and
        its rate limit is never approached).  See :mod:`streamcore.reacquire`.  Needs the
        watchdog (it is the one that looks) and ``realtime=True``.

    Raises
    ------
    TypeError
        A number of the wrong type, an unknown ``dtype``, or ``watchdog`` of the wrong type.
    ValueError
        A number out of its range, an unknown ``sink``, ``dither`` without int16, a
        ``dtype`` the sink object cannot carry, ``input_channels`` with a sink that does
        not capture, or watchdog settings too large for the C engine.
    SinkInUseError
        The sink object belongs to another engine that is not closed.
    NativeError
        The C engine could not be created (memory).

    Notes
    -----
    Build, use and close an engine from any Python thread: every method serialises on one
    lock, and every method but :meth:`close` raises
    :class:`~streamcore.errors.EngineClosedError` once closing began.  The realtime mixer
    thread, its watchdog and its canary are C threads started by :meth:`start`; they never
    take the GIL.  Closing is idempotent; an engine collected while open warns
    (ResourceWarning), and one still open at interpreter exit is closed by an exit hook,
    with the same warning.  After fork the child's copies are marked closed.
    """

    # Class-level defaults: close(), __del__ and repr work after a failed __init__.
    _handle = _ffi.NULL
    _lock: Any = None
    _closing = True
    _closed = True
    _started = False
    _clock = "null"
    sink: Any = None
    sink_object: Any = None

    def __init__(self, samplerate: int = 48000, blocksize: int = 128, channels: int = 2,
                 periods: int = 2, sink: Any = "null", dtype: str | None = None,
                 realtime: bool = True, priority: int = 10, lock_memory: bool = True,
                 watchdog: Watchdog | bool | None = None, dither: bool = False,
                 input_channels: int = 0, reacquire: str = "backoff") -> None:
        samplerate = positive_int("samplerate", samplerate, _lib.SC_MIN_SAMPLERATE,
                                  _lib.SC_MAX_SAMPLERATE)
        blocksize = positive_int("blocksize", blocksize, _lib.SC_MIN_BLOCKSIZE,
                                 _lib.SC_MAX_BLOCKSIZE)
        channels = positive_int("channels", channels, 1, _lib.SC_MAX_CHANNELS)
        periods = positive_int("periods", periods, 2, _lib.SC_MAX_PERIODS)
        priority = positive_int("priority", priority, 1, 98)
        input_channels = positive_int("input_channels", input_channels, 0,
                                      _lib.SC_MAX_CHANNELS)
        if watchdog is None or watchdog is True:
            watchdog = Watchdog()
        elif watchdog is False:
            watchdog = Watchdog(enabled=False)
        elif not isinstance(watchdog, Watchdog):
            raise TypeError(f"watchdog must be a Watchdog, None or False, not {watchdog!r}")
        if not isinstance(reacquire, str) or reacquire not in _reacquire.POLICIES:
            raise ValueError(f"reacquire must be one of {_reacquire.POLICIES}, not "
                             f"{reacquire!r}")
        sink, sink_object = _sink_hook(sink)
        if input_channels and not getattr(sink_object, "captures", False):
            raise ValueError(f"input_channels needs a sink that captures ('device' or a "
                             f"DeviceSink), not {sink_object or sink!r}")
        if sink_object is not None:
            from streamcore.sinks.base import bind

            bind(sink_object, self)  # SinkInUseError while another engine holds it
        try:
            self._create(samplerate, blocksize, channels, periods, sink, sink_object, dtype,
                         realtime, priority, lock_memory, watchdog, dither, input_channels,
                         reacquire)
        except BaseException:
            if sink_object is not None:
                from streamcore.sinks.base import unbind

                unbind(sink_object, self)
            raise

    def _create(self, samplerate: int, blocksize: int, channels: int, periods: int, sink: str,
                sink_object: Any, dtype: Any, realtime: bool, priority: int,
                lock_memory: bool, watchdog: Watchdog, dither: bool,
                input_channels: int, reacquire: str) -> None:
        #: periods asked, when the sink needed more (the ring then holds ``periods``)
        self.periods_asked: int | None = None
        if sink_object is not None:
            dtype, periods = _sink_format(sink_object, blocksize, channels, dtype, periods)
            needed = sink_object.min_periods(blocksize)
            if needed is not None and needed > periods:
                self.periods_asked = periods
                periods = positive_int("the sink's periods", needed, 2, _lib.SC_MAX_PERIODS)
        dtype = "float32" if dtype is None else dtype
        if not isinstance(dtype, str):
            try:
                dtype = _np.dtype(dtype).name
            except TypeError:
                raise TypeError(f"dtype must be one of {tuple(_FORMATS)}, not "
                                f"{dtype!r}") from None
        if dtype not in _FORMATS:
            raise TypeError(f"dtype must be one of {tuple(_FORMATS)}, not {dtype!r}")
        if dither and dtype != "int16":
            raise ValueError("dither is for int16 output")

        self.samplerate = samplerate
        self.blocksize = blocksize
        self.channels = channels
        self.periods = periods
        self._clock = sink  # 'manual', 'null' or 'external' (a sink object's consumer clock)
        #: The sink: the object given (or made for 'device'), else the name given ('null',
        #: 'manual', 'external').
        self.sink: Any = sink_object if sink_object is not None else sink
        self.sink_object = sink_object
        #: Why the sink failed for good (a sentence), or None.  Once set the engine has
        #: stopped, its voices ended as 'failed' and start/play/stream raise SinkError.
        self.failure: str | None = None
        self.dtype = _np.dtype(dtype)
        self.realtime = bool(realtime)
        self.priority = priority
        self.lock_memory = bool(lock_memory)
        self.watchdog = watchdog
        self.dither = bool(dither)
        self.period_ns = blocksize * 1_000_000_000 // samplerate
        self.grant: _realtime.RealtimeGrant | None = None  #: mixer's grant (None: not started/off)
        self.watchdog_grant: _realtime.RealtimeGrant | None = None  #: the watchdog thread's grant
        self.output: _Ring | None = None  #: the output Ring (made by the first start)
        self.mixer_tid = self.watchdog_tid = self.canary_tid = 0  #: kernel tids, once started

        config = _ffi.new("sc_engine_config *")
        config.samplerate, config.blocksize = samplerate, blocksize
        config.channels, config.periods = channels, periods
        config.format = _FORMATS[dtype]
        config.clock = {"manual": _lib.SC_CLOCK_MANUAL, "null": _lib.SC_CLOCK_TIMER,
                        "external": _lib.SC_CLOCK_CONSUMER}[sink]
        timing = "clock" if sink_object is None else getattr(sink_object, "timing", "clock")
        if timing not in _TIMINGS:
            raise ValueError(f"the sink's timing must be one of {tuple(_TIMINGS)}, not "
                             f"{timing!r}")
        config.content = _TIMINGS[timing]
        config.lock_memory = 1 if lock_memory else 0
        config.dither = 1 if dither else 0
        try:
            watchdog._fill(config, self.period_ns)
        except (OverflowError, ValueError) as e:  # a setting too large for the C fields
            raise ValueError(f"watchdog settings out of range for this engine: {e}") from None
        if sink == "manual":
            config.watchdog = 0
        out = _ffi.new("sc_engine **")
        check(_lib.sc_engine_create(out, config), "sc_engine_create")

        self._lock = threading.RLock()
        self._handle = out[0]
        self._table = VoiceTable(self._handle, self._lock, samplerate, channels)
        self._events = EventLog(self._handle, self._lock)
        self._writers = _producer.WriterWatch(self._writer_died)
        self._reacquirer = _reacquire.Reacquirer(reacquire, self._regain, self._regained)
        self._watching_losses = False  # subscribed to the events for _reacquirer
        self._context: SinkContext | None = None
        # (sc_ring *, keepalive) of the output ring: the mixer writes it until destroy.
        self._output_native: tuple[Any, object] | None = None
        self.input_channels = input_channels
        self._capture: Capture | None = None
        if input_channels:
            self._capture = Capture(self._handle, self._table, input_channels, samplerate,
                                    lock_memory)
            if not self._capture.locked:
                _lib.sc_engine_taint(self._handle, _lib.SC_TAINT_MLOCK_FAILED)
        self._snapshot_token = 0
        self._closer: int | None = None
        self._closed_event = threading.Event()
        self._closing = self._closed = False
        _engines.add(self)

    # ---- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is not None and self._table is not None:
            # An exception is on its way out (perhaps the failure itself): close() must not
            # replace it with the sink's failure.
            self._table.failure_reported = True
        self.close()

    def __del__(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        # The default argument survives module teardown.  While the interpreter finalises,
        # no native code is touched (the exit hook closed every engine it could reach).
        if self._closing or _finalizing():
            return
        try:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
            self.close()
        except Exception:  # nothing may escape __del__; the warning said what matters
            pass

    def __repr__(self) -> str:
        state = ("closed" if self._closing else "running" if self._started else "stopped")
        try:
            return (f"<Engine {state} {self.samplerate} Hz, {self.blocksize} frames x "
                    f"{self.periods}, {self.channels} ch, {self.dtype.name}, "
                    f"sink={self.sink_name}>")
        except AttributeError:  # a constructor that failed half-way
            return f"<Engine {state}>"

    @property
    def sink_name(self) -> str:
        """The sink's name: 'null', 'manual', 'external', or the sink object's ``name``.

        Notes
        -----
        Any thread.
        """
        sink = self.sink
        return sink if isinstance(sink, str) else str(getattr(sink, "name", type(sink).__name__))

    @property
    def closed(self) -> bool:
        """True once :meth:`close` began; every later call raises EngineClosedError.

        Notes
        -----
        Any thread.
        """
        return self._closing

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop` (never for the 'manual' sink).

        Notes
        -----
        Any thread.  The mixer may have stopped on its own meanwhile (a failed sink stops
        the engine): ``stats().running`` reads the C side.
        """
        return self._started

    def _check_open(self) -> None:
        """Raise EngineClosedError once closing began (callers hold the lock)."""
        if self._closing:
            raise EngineClosedError(_CLOSED)

    def _check_usable(self) -> None:
        """The closed check, and SinkError once the sink failed (callers hold the lock):
        a voice queued on an engine whose sink is gone would never be handed back."""
        self._check_open()
        if self.failure is not None:
            self._table.failure_reported = True
            raise SinkError(f"the engine's sink failed ({self.failure}) and the engine "
                            f"stopped: close it and make a new one")

    def _fail_locked(self, reason: str) -> None:
        """The sink failed for good (its own thread, holding the lock): remember why, stop,
        and tell subscribers.  Voices flushed by the stop end as 'failed'."""
        self.failure = reason
        self._table.failure = reason
        try:
            self._stop_locked()
        finally:
            self._events.post(Event.made_here("sink_failed", reason))

    def start(self) -> None:
        """Start the mixer thread, its watchdog and canary, and acquire realtime for the mixer.

        Idempotent; nothing to start for the 'manual' sink.  Pairs with :meth:`stop`.  The
        output ring is made on the first start and the sink object, if any, is opened (once)
        and started (at every start).

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
            self._check_usable()
            if self._started or self._clock == "manual":
                return
            if self.output is None:
                self.output = self._make_output()
            self._open_sink()
            if self._output_native is None:
                # Held until the native engine is freed, whatever happens to the Ring object.
                self._output_native = self.output.native_handle()
            # A sink may bring its own driver (the pipe sink: the mixer writes the pipe), used
            # from here until the engine stops; None: the engine's own clock.
            driver = self.sink_object.native_driver() if self.sink_object is not None else None
            check(_lib.sc_engine_start(self._handle, self._output_native[0],
                                       _ffi.NULL if driver is None else driver),
                  "starting the mixer")
            self._started = self._table.running = True
            self.mixer_tid, self.watchdog_tid, self.canary_tid = _tids(self._handle)
            self._acquire_realtime()
            self._watch_losses()
            self._start_sink()

    def _make_output(self) -> _Ring:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unlocked ring is reported as a taint instead
            frames = self.periods * self.blocksize
            wanted = self.sink_object.ring_frames(self.blocksize) if self.sink_object else None
            ring = _Ring(max(frames, wanted or 0), self.channels, self.dtype.name,
                         lock="try" if self.lock_memory else False, name="engine-output")
        if self.lock_memory and not ring.locked:
            _lib.sc_engine_taint(self._handle, _lib.SC_TAINT_MLOCK_FAILED)
        return ring

    def _acquire_realtime(self) -> None:
        if not self.realtime:
            self.grant = None
            _lib.sc_engine_taint(self._handle, _lib.SC_TAINT_RT_DENIED)
            return
        try:
            self.grant = _realtime.acquire_realtime(tid=self.mixer_tid, priority=self.priority)
        except ValueError:
            # A sink's own driver may end the mixer at once (a pipe whose reader is already
            # gone): its thread has exited, so there is nothing to promote.  The sink's
            # failure reaches the application through the sink (engine.failure).
            if os.path.exists(f"/proc/self/task/{self.mixer_tid}"):
                raise
            self.grant = None
            return
        if not self.grant.realtime:
            _lib.sc_engine_taint(self._handle, _lib.SC_TAINT_RT_DENIED)
        # The watchdog reports the mixer found without what it was granted (someone else
        # took it: rtkit's canary, chrt), once per loss; -1: nothing to lose.
        _lib.sc_engine_set_granted(self._handle, _GRANTED_POLICY.get(self.grant.policy, -1))
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
        EngineClosedError
            The engine is closed.
        NativeError
            The C engine refused to stop or flush.

        Notes
        -----
        Any Python thread, or a sink's own thread after it failed; joins the C threads, so
        never from the audio path.
        """
        with self._lock:
            self._check_open()
            self._stop_locked()

    def _stop_locked(self) -> None:
        if self._started:
            try:
                self._stop_sink()
            finally:
                self._started = self._table.running = False
                check(_lib.sc_engine_stop(self._handle), "stopping the mixer")
                self._drain_sink()
        check(_lib.sc_engine_flush(self._handle), "sc_engine_flush")
        self._table.reap()
        self._events.poll()

    def drain(self, timeout: float | None = None) -> bool:
        """Play what is queued, then end the run exactly there, and stop.

        Once every voice has ended (looping ones never do: stop them; stream voices end
        after :meth:`StreamVoice.finish <streamcore.voice.StreamVoice.finish>`), the run's
        end is the last frame any voice played.  A sink that is not a clock (a pipe, a file
        as fast as the disk takes it) gets exactly the frames up to it: nothing after, not
        even the rest of the last period.  A device or the null sink plays out what is
        buffered.  Then the engine stops (:meth:`stop`); it may be started again.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most; None waits as long as it takes.

        Returns
        -------
        bool
            True: drained and stopped.  False: the timeout came first; the engine runs on
            (call drain again, or stop).

        Raises
        ------
        EngineClosedError
            The engine is closed.
        SinkError
            The sink failed (before or while draining); the engine has stopped.
        ValueError
            ``timeout`` is negative or not finite.

        Notes
        -----
        A 'manual' engine only takes the request and returns True at once: :meth:`render`
        until :attr:`end_frame` is not -1, and keep the frames before it.

        Any Python thread, not the audio path.  A stopped engine is started first, so
        ``play(x); drain()`` plays x from output frame 0.  Voices started while draining
        extend the run if they come before its end; after it they are not heard (they
        end as 'flushed' when the engine stops).
        """
        if timeout is not None:
            timeout = finite("timeout", timeout)
            if timeout < 0:
                raise ValueError(f"timeout must be >= 0, not {timeout}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._check_usable()
            if self._clock == "manual":
                _lib.sc_engine_drain(self._handle)  # the caller renders up to end_frame
                return True
            self.start()
            _lib.sc_engine_drain(self._handle)
        pause = 0.0005
        while True:
            with self._lock:
                self._check_open()
                if self.failure is not None:
                    self._check_usable()  # raises SinkError
                if not self._started:  # stopped by another thread meanwhile
                    return True
                end = int(_lib.sc_engine_end_frame(self._handle))
                if end >= 0 and self._delivered(end):
                    self._stop_locked()
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def _delivered(self, end: int) -> bool:
        """Every frame of the run before ``end`` has left the engine (lock held)."""
        if self.sink_object is not None:
            return bool(self.sink_object.delivered(end))
        assert self.output is not None
        return _telemetry.frames_taken(self._handle, self.output) >= end

    @property
    def end_frame(self) -> int:
        """The run's end after :meth:`drain` (frames since the run's start), or -1.

        -1 while voices still play, or before a drain was asked.

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread; an atomic read.
        """
        with self._lock:
            self._check_open()
            return int(_lib.sc_engine_end_frame(self._handle))

    def close(self, drain: bool = False) -> None:
        """Stop, then free the native engine, the output ring and the rings it made; idempotent.

        Parameters
        ----------
        drain : bool
            First :meth:`drain`: play what is queued to its end (waits as long as it takes).

        Raises
        ------
        SinkError
            The sink object reports a failure at close (e.g. the file sink's write error),
            or the sink failed while playing (a device whose server died) and no call has
            raised that failure yet (a voice's ``wait()``, ``play()``, ``start()``): it is
            reported once, here.  The engine is freed all the same.
        NativeError
            The C engine refused to stop; it is freed all the same.

        Notes
        -----
        Any Python thread, also a :meth:`subscribe` callback or a thread racing another
        caller: from the moment closing begins every other method raises
        :class:`~streamcore.errors.EngineClosedError`, and a second ``close()`` from another
        thread waits until the first one has finished.  Joins the C threads, so never from
        the audio path.
        """
        lock = self._lock
        if lock is None:  # the constructor failed before the engine existed
            return
        if drain:
            with lock:
                usable = not self._closing and self.failure is None
            if usable:
                self.drain()
        with lock:
            if self._closing:
                first = False
                wait = not self._closed and self._closer != threading.get_ident()
            else:
                first, wait = True, False
                self._closing = True
                self._closer = threading.get_ident()
        if not first:
            if wait:
                self._closed_event.wait()
            return
        try:
            self._events.stop_delivery()  # outside the lock: its thread may be waiting for it
            self._reacquirer.close()  # outside too: an attempt in progress takes the lock
            with lock:
                self._shutdown_locked()
            self._writers.close()  # outside too; producers end now that nothing reads
        finally:
            self._closed_event.set()
        if self.failure is not None and not self._table.failure_reported:
            self._table.failure_reported = True
            raise SinkError(f"the engine's sink failed while playing: {self.failure}")

    def _shutdown_locked(self) -> None:
        """Stop, close the sink, free the native engine, release every pin (lock held)."""
        try:
            self._stop_locked()
        finally:
            try:
                self._close_sink()
            finally:
                self._events.close()
                _lib.sc_engine_destroy(self._handle)  # stops the threads too if stop failed
                self._handle = _ffi.NULL
                self._table.close()     # unpins every voice's array or ring
                if self._capture is not None:
                    self._capture.close()
                self._output_native = None
                if self.output is not None:
                    self.output.close()
                self._closed = True
                _engines.discard(self)

    # ---- voices -----------------------------------------------------------------------------

    def play(self, array: Any, gain: float = 1.0, pan: float = 0.0, loop: bool = False,
             at: int | None = None, fade_in: float = 0.0, late: str = "play",
             channels: list[int] | None = None) -> Voice:
        """Play ``array`` in place, from output frame ``at`` (None: the next period).

        The array is read where it is, not copied: keep it unchanged until the voice is done
        (the engine holds a reference until then).

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
            the next period.  A frame already rendered is a late start (counted in
            ``stats().late_starts``), handled as ``late`` says.
        fade_in : float
            Seconds (0 .. 3600) of a linear ramp at the start.
        late : str
            For a late start: 'play' (from the first frame, now), 'skip' (the frames already
            due are skipped: it plays on as if started in time; all of them: it ends
            'finished') or 'error' (not played: ``end_reason`` 'late' and ``wait()`` raises
            :class:`~streamcore.errors.LateStartError`).
        channels : list of int or None
            A channel map: the array's channel c plays on output channel ``channels[c]``
            only, at ``gain`` (``pan`` must be 0), e.g. ``[2, 3]`` for a stereo array on
            channels 2 and 3 of a 4- or 8-channel engine.  None: the array has 1 or the
            engine's channels, laid out as the module docstring of :mod:`streamcore.voice`
            says.

        Returns
        -------
        Voice
            The playing voice.

        Raises
        ------
        TypeError
            ``array`` is not a float32 numpy array, or a number of the wrong type.
        ValueError
            The wrong shape or channels, no frames, not C-contiguous, a number out of its
            range, or an unknown ``late``.
        EngineClosedError
            The engine is closed.
        VoiceLimitError
            All ``MAX_VOICES`` voices are busy.
        CommandQueueFullError
            The mixer took no command for 1 s (or, not started, the queue is full).

        Notes
        -----
        Any Python thread; returns at once, the realtime mixer thread starts the voice at the
        start of its next period.  Whether ``at`` is late is decided by the mixer when it
        takes the voice (the frame clock moves on meanwhile).
        """
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
        output_map = None
        if channels is not None:
            output_map = self._output_map(channels, pan)
            if voice_channels != len(output_map):
                raise ValueError(f"array has {voice_channels} channels but channels= maps "
                                 f"{len(output_map)}: {output_map}")
        elif voice_channels not in (1, self.channels):
            raise ValueError(f"array has {voice_channels} channels; the engine mixes 1 or "
                             f"{self.channels} (or give channels=[...] to place them)")
        if array.shape[0] == 0:
            raise ValueError("array has no frames")
        if not array.flags.c_contiguous:
            raise ValueError("array must be C-contiguous (numpy.ascontiguousarray(array)); "
                             "voices read it in place")
        with self._lock:
            self._check_usable()
            return self._table.add(_lib.SC_VOICE_BUFFER, array, voice_channels, gain, pan, at,
                                   fade_in, loop=bool(loop), late=late, output_map=output_map)

    def _output_map(self, channels: Any, pan: Any) -> list[int]:
        """A voice's ``channels=[...]`` map, checked (a mapped voice has no pan)."""
        try:
            mapping = self._table.channel_map(channels)
        except (TypeError, ValueError) as e:
            raise type(e)(f"channels: {e}") from None
        if finite("pan", pan, -1.0, 1.0) != 0.0:
            raise ValueError("pan must be 0 for a voice with a channel map: the map places "
                             "each channel")
        return mapping

    def stream(self, channels: int | list[int] = 1, frames: int | None = None, gain: float = 1.0,
               pan: float = 0.0, at: int | None = None, fade_in: float = 0.0,
               ring: _Ring | None = None, late: str = "play",
               producer: Callable[..., object] | None = None, args: tuple[Any, ...] = (),
               kwargs: dict[str, Any] | None = None) -> StreamVoice:
        """A voice that plays what is written into its ring.

        Write with ``write_view``/``commit`` or ``write`` on the returned
        :class:`StreamVoice`, or let a process of its own write it (``producer``).  On
        underrun the voice plays silence, counts it (``stats()['underruns']``) and continues
        with the next frames written.  A stream voice ends when it is stopped
        (:meth:`StreamVoice.stop`), finished (:meth:`StreamVoice.finish`: what is queued
        plays first), when its writer closes the ring (likewise after what is queued), or
        when its writer's process dies without closing it ('producer_died', at once).

        Parameters
        ----------
        channels : int or list of int
            1 or the engine's channels; or a channel map, the output channel of each of the
            voice's channels (``[2, 3]``: a stereo voice on channels 2 and 3; ``pan`` must be
            0).  With ``ring`` given, an int is ignored (the ring's channels count) and a map
            must have the ring's channels.
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
            from another process's fd (its writer is then that process).  The engine holds
            the ring's memory until the voice is done: closing the ring meanwhile closes
            the Python object at once and frees the memory when the voice is handed back
            (and when the closed handle was the ring's writer, its goodbye ends the stream:
            what it wrote plays, then the voice ends 'finished').
            A writer in another process is watched: if it dies without closing the ring
            the voice ends ('producer_died') and an event says so.
        late : str
            For an ``at`` already rendered: 'play', 'skip' or 'error', as for :meth:`play`.
        producer : callable or None
            Run ``producer(stream, *args, **kwargs)`` in a new process (multiprocessing's
            "spawn": a module-level function, and a script needs the
            ``if __name__ == "__main__":`` guard) that writes this voice's ring: ``stream``
            is a :class:`~streamcore.producer.ProducerStream` whose ``write`` blocks until
            queued.  The GIL of this process cannot starve it.  When it returns the voice
            plays what it queued, then ends 'finished'; if it raises or is killed the voice
            ends 'producer_died' within milliseconds, with a ``producer_died`` event; when
            the voice ends first (stopped, the engine closed or killed) its next write raises
            :class:`~streamcore.errors.PeerGoneError` and the process ends.
        args, kwargs
            ``producer``'s arguments (sent to the process pickled).

        Returns
        -------
        StreamVoice
            The playing voice; its ring is :attr:`StreamVoice.ring`.

        Raises
        ------
        TypeError
            ``ring`` is not a float32 Ring, a number of the wrong type, or ``producer`` is
            not callable.
        ValueError
            Channels other than 1 or the engine's, a number out of its range, a bad
            ``late``, or both ``ring`` and ``producer``.
        RingClosedError
            ``ring`` is closed.
        ValueError
            ``producer`` or its arguments cannot be sent to another process (nothing is
            made).
        OSError
            The producer process could not be started (the voice is stopped).
        EngineClosedError
            The engine is closed.
        VoiceLimitError
            All ``MAX_VOICES`` voices are busy.
        CommandQueueFullError
            The mixer took no command for 1 s.

        Notes
        -----
        Any Python thread.  The ring has one writer (one thread, or the process holding the
        fd) and the realtime mixer thread as its reader until the voice is done.  A ring the
        engine made is closed when the voice is handed back (its fd, mappings and locked
        memory go then); a ring passed in stays the caller's to close.
        """
        if producer is not None:
            if ring is not None:
                raise ValueError("give a ring or a producer, not both: a producer writes a "
                                 "ring the engine makes for it")
            _producer.check_sendable(producer, tuple(args), dict(kwargs or {}))
        output_map = None
        if isinstance(channels, list | tuple) or not isinstance(channels, int | _np.integer):
            output_map = self._output_map(channels, pan)  # a map, or the error saying so
            if ring is not None and ring.channels != len(output_map):
                raise ValueError(f"the ring has {ring.channels} channels but channels= maps "
                                 f"{len(output_map)}: {output_map}")
        if ring is None:
            if output_map is not None:
                channels = len(output_map)
            else:
                channels = positive_int("channels", channels, 1, self.channels)
                if channels not in (1, self.channels):
                    raise ValueError(f"a stream voice has 1 or {self.channels} channels, "
                                     f"not {channels} (or give channels=[...] to place them)")
            if frames is None:
                frames = max(self.samplerate // 4, 4 * self.periods * self.blocksize)
            size = positive_int("frames", frames, 1, 1 << 26)
            with self._lock:
                self._check_usable()  # before making a ring for nothing
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unlocked: reported by the ring's stats
                ring = _Ring(size, channels, "float32",
                             lock="try" if self.lock_memory else False, name="stream-voice")
            owned = True  # the table closes it when the voice is handed back (or not added)
        else:
            if not isinstance(ring, _Ring):
                raise TypeError(f"ring must be a streamcore.Ring, not {type(ring).__name__}")
            if ring.dtype != _np.float32:  # RingClosedError if closed
                raise TypeError(f"a stream voice's ring must be float32, not {ring.dtype}")
            if ring.channels not in (1, self.channels) and output_map is None:
                raise ValueError(f"the ring has {ring.channels} channels; the engine mixes 1 "
                                 f"or {self.channels} (or give channels=[...] to place them)")
            channels = ring.channels
            owned = False
        with self._lock:
            try:
                self._check_usable()
            except BaseException:
                if owned:
                    ring.close()
                raise
            voice = self._table.add(_lib.SC_VOICE_STREAM, ring, channels, gain, pan, at,
                                    fade_in, owned=owned, late=late, output_map=output_map)
            assert isinstance(voice, StreamVoice)  # the table makes one for SC_VOICE_STREAM
        if producer is None:
            if not owned:  # a writer in another process is watched for its death
                self._writers.watch(voice, ring)
            return voice
        try:
            process = _producer.spawn(ring, producer, tuple(args), dict(kwargs or {}),
                                      self.samplerate, self.blocksize)
        except BaseException:
            voice.stop(fade=0)
            raise
        self._writers.watch(voice, ring, process)
        return voice

    def _writer_died(self, voice: StreamVoice, detail: str) -> None:
        """The writer of ``voice``'s ring died without closing it (the writers' watch
        thread): end the voice and tell subscribers."""
        with contextlib.suppress(EngineClosedError):
            if not self._table.end_voice(voice, "producer_died"):
                return
        self._events.post(Event.made_here("producer_died",
                                          f"stream voice {voice.id}: {detail}"))

    # ---- input (Engine(input_channels=N)) ------------------------------------------------

    def _input(self) -> Capture:
        if self._capture is None:
            raise ValueError("this engine captures nothing: make it with "
                             "Engine(..., input_channels=N) on a device")
        return self._capture

    @property
    def input(self) -> _Ring:
        """The input tap, a :class:`~streamcore.Ring` of every captured frame.

        float32, ``input_channels`` channels; the mixer writes it from the first time this
        property is read on.  Read it from one thread, or from another process through
        ``input.fd``, as fast as the device captures; a reader that falls behind by more
        than the ring holds loses frames: counted in ``stats().input`` (``tap_overflows``,
        ``tap_lost_frames``) and the XRUN taint, with zeros in their place (a frame never
        loses its position).

        Raises
        ------
        ValueError
            The engine has no input.
        EngineClosedError
            The engine is closed.
        """
        with self._lock:
            self._check_open()
            return self._input().arm_tap()

    async def aread_input(self, frames: int, timeout: float | None = None) -> _np.ndarray:
        """asyncio: the next ``frames`` frames of the input tap (:attr:`input`).

        Parameters
        ----------
        frames : int
            Frames to read, 1 .. the tap's capacity.
        timeout : float or None
            Seconds at most; None: until they are there.

        Returns
        -------
        numpy.ndarray
            float32, ``(k, input_channels)``: ``k == frames``, or fewer after the timeout or
            when the engine stopped (nothing more will be captured).

        Raises
        ------
        ValueError
            The engine has no input, a bad ``frames`` or ``timeout``, or the tap has another
            reader (:meth:`record_to`).
        EngineClosedError
            The engine is closed.

        Notes
        -----
        The event loop's own thread, no polling: it watches the engine's progress eventfd
        (as :meth:`StreamVoice.awrite <streamcore.StreamVoice.awrite>` does), which the
        mixer writes once per cycle while someone waits.  The tap's one-reader rule holds:
        this is the same reader as :attr:`input`.
        """
        with self._lock:
            self._check_open()
            capture = self._input()
            tap = capture.arm_tap()
        frames = positive_int("frames", frames, 1, tap.capacity)
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + finite("timeout", timeout, 0.0)
        out = _np.empty((frames, tap.channels), _np.float32)
        done = tap.read(frames, out=out).shape[0]
        if done == frames:
            return out
        with MixerProgress(self._table) as progress:
            while done < frames:
                left = None if deadline is None else deadline - time.monotonic()
                if (left is not None and left <= 0) or not self._table.mixing():
                    break
                await progress.next(left)
                done += tap.read(frames - done, out=out[done:]).shape[0]
        return out[:done]

    @property
    def input_frame(self) -> int:
        """The input frame clock: the next captured frame the mixer hands on.

        Frames are counted since the engine was made, lost ones included; :attr:`frame` is
        the output's clock.

        Raises
        ------
        ValueError
            The engine has no input.
        EngineClosedError
            The engine is closed.
        """
        with self._lock:
            self._check_open()
            return self._input().frame

    def monitor(self, gain: float = 1.0, input_channels: list[int] | None = None
                ) -> StreamVoice:
        """Play the input on the outputs, mixed in C with the voices (input monitoring).

        Parameters
        ----------
        gain : float
            Linear gain, -64 .. 64.
        input_channels : list of int or None
            The input channel for each of the monitor's channels: one (a mono monitor,
            panned to the centre) or as many as the engine's channels.  None: input channel
            c on output c, repeating the inputs when there are fewer (a mono input on both
            sides at ``gain``).

        Returns
        -------
        StreamVoice
            The monitor: ``stop()`` it, change its ``gain`` or ``pan``; its ring is the
            capture step's to write.

        Raises
        ------
        TypeError, ValueError
            A bad ``gain`` or ``input_channels``, or the engine has no input.
        SinkError
            The sink failed.
        EngineClosedError
            The engine is closed.
        VoiceLimitError
            All voice slots are busy.

        Notes
        -----
        Any thread.  The latency is the engine's own: a captured period is mixed into the
        next period rendered, which plays after the fill (``stats().fill``) and the
        device's output latency; frames the device captures faster than the engine plays
        (a host period larger than the fill) are dropped and counted
        (``stats().input['monitor_dropped']``).
        """
        with self._lock:
            self._check_usable()
            capture = self._input()
            if input_channels is None:
                mapping = [c % capture.channels for c in range(self.channels)]
            else:
                if isinstance(input_channels, str | bytes) or not hasattr(
                        input_channels, "__len__"):
                    raise TypeError(f"input_channels must be a list of ints, not "
                                    f"{type(input_channels).__name__}")
                mapping = [positive_int("an input channel", c, 0, capture.channels - 1)
                           for c in input_channels]
                if len(mapping) not in (1, self.channels):
                    raise ValueError(f"input_channels must name 1 or {self.channels} input "
                                     f"channels (the engine's), not {len(mapping)}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # unlocked: reported by the ring's stats
                ring = _Ring(_CAPTURE_FRAMES, len(mapping), "float32",
                             lock="try" if self.lock_memory else False, name="engine-monitor")
            voice = self._table.add(_lib.SC_VOICE_STREAM, ring, len(mapping), gain, 0.0, None,
                                    0.0, owned=True, monitor=mapping)
            assert isinstance(voice, StreamVoice)
            return voice

    def input_levels(self) -> list[float]:
        """The input meters: each channel's peak |sample| since the last call.

        Returns
        -------
        list of float
            Linear peaks (0 .. 1 for a sane input), one per input channel; measured in C on
            every captured frame, so nothing between two calls is missed.

        Raises
        ------
        ValueError
            The engine has no input.
        EngineClosedError
            The engine is closed.
        """
        with self._lock:
            self._check_open()
            return self._input().peaks()

    def record(self, frames: int, at: int | None = None) -> Recording:
        """Record exactly ``frames`` input frames from input frame ``at``.

        Parameters
        ----------
        frames : int
            1 .. 2**31.
        at : int or None
            The input frame of ``data[0]`` (>= :attr:`input_frame`); None: the next frames
            captured (``Recording.start_frame`` says which, once the mixer took it).

        Returns
        -------
        Recording
            Filled in C as frames arrive; ``wait()``, then ``data`` ((frames,
            input_channels) float32).

        Raises
        ------
        TypeError, ValueError
            ``frames`` or ``at`` not an int in range, or the engine has no input.
        InputLateError
            ``at`` is before :attr:`input_frame`.
        SinkError
            The sink failed (the engine cannot record any more).
        EngineClosedError
            The engine is closed.
        VoiceLimitError
            All voice slots are busy (recordings share them with voices).

        Notes
        -----
        Any thread.  The buffer is the recording's own (prefaulted and mlocked where the
        limit allows): nothing is lost while the mixer keeps up, whatever Python does; the
        engine need not be started yet (the recording fills once it runs).
        """
        with self._lock:
            self._check_usable()
            return self._input().record(frames, at)

    def record_to(self, target: Any, seconds: float | None = None, frames: int | None = None,
                  format: str = "wav", dtype: str = "float32") -> InputWriter:
        """Write the input to a file, a pipe or a socket, in C (no Python in the data path).

        Parameters
        ----------
        target : str, os.PathLike, int or file object
            A path (the file is created or truncated, and closed by the writer), or
            'stdout', an open fd or an object with ``fileno()`` (left open): a pipe, FIFO,
            socket or file open for writing.
        seconds : float or None
            How long (a whole number of frames at the samplerate); or give ``frames``.
        frames : int or None
            Exactly this many frames; neither: until the writer is closed.
        format : str
            'wav' (a header, then ``dtype`` samples; a regular file gets its real sizes at
            close, a pipe the streaming header), 'f32le' or 's16le' (raw).
        dtype : str
            'float32' or 'int16' (rounded, clipped), for 'wav'.

        Returns
        -------
        InputWriter
            ``wait()`` for the frames, ``close()`` (or ``with``), ``stats()``,
            ``first_frame`` (the input frame of the first frame written).

        Raises
        ------
        TypeError, ValueError
            A bad argument, both ``seconds`` and ``frames``, a descriptor that is closed or
            open for reading only, the engine has no input, or :attr:`input` was handed out
            (the tap has one reader).
        OSError
            The path could not be opened for writing.
        EngineClosedError
            The engine is closed.

        Notes
        -----
        The writer reads the input tap (:attr:`input`) from the moment it is made: the
        first frame is the next one captured.  A reader of a pipe that falls behind by more
        than the tap holds loses frames: counted as in :attr:`input`.
        """
        if format not in ("wav", "f32le", "s16le"):
            raise ValueError(f"format must be 'wav', 'f32le' or 's16le', not {format!r}")
        if dtype not in ("float32", "int16"):
            raise ValueError(f"dtype must be 'float32' or 'int16', not {dtype!r}")
        if seconds is not None and frames is not None:
            raise ValueError("give seconds or frames, not both")
        if seconds is not None:
            count = round(finite("seconds", seconds, 0.0, 1e7) * self.samplerate)
            if count < 1:
                raise ValueError(f"seconds={seconds!r} is less than a frame")
        else:
            count = 0 if frames is None else positive_int("frames", frames, 1, 1 << 62)
        with self._lock:
            self._check_usable()
            capture = self._input()
            if capture.tap_reader is not None:
                raise ValueError("the input tap already has its reader (Engine.input or "
                                 "another writer): it has one")
            owns = isinstance(target, str | os.PathLike) and target != "stdout"
            if owns:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                             0o644)
            else:  # an fd, a file object or 'stdout': checked open and writable
                fd = writable_fd(target)
            try:
                return InputWriter(capture, fd, count, format, dtype, owns_fd=owns)
            except BaseException:
                if owns:
                    os.close(fd)
                raise

    def measure_latency(self, seconds: float = 1.0) -> Latency:
        """Measure the round trip from the outputs to the inputs through a loopback.

        Parameters
        ----------
        seconds : float
            The measurement signal's length at most (0.05 .. 10): a maximum length sequence
            (see :mod:`streamcore.latency`) played on every output channel.

        Returns
        -------
        Latency
            ``frames`` (exact to the frame), ``fraction``, ``ms``, ``reported_frames`` (the
            host's own figure), ``confidence``, ``input_channel``.

        Raises
        ------
        TypeError, ValueError
            ``seconds`` out of range, or the engine has no input.
        LoopbackNotFoundError
            The signal did not come back within a second: nothing connects the outputs to
            the inputs (a cable, JACK/PipeWire connections, a device's monitor).
        SinkError
            The device failed, or glitched (an xrun, lost frames) in each of 3 runs: a run
            it glitched in is not trusted and is made again.
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread; blocks for about ``seconds`` plus a second.  The engine must be
        running.  Other voices playing meanwhile are heard by the measurement (they lower
        its confidence, not its result, unless they drown the signal).
        """
        seconds = finite("seconds", seconds, 0.05, 10.0)
        order = _latency.order_for(int(seconds * self.samplerate))
        signal = _latency.mls(order)
        window = self.samplerate  # the round trip searched: up to a second
        data, reported = self._play_and_record(
            _np.repeat(signal[:, None], self.channels, axis=1), signal.shape[0] + window, 0)
        lag, fraction, confidence, channel = _latency.find_delay(data, signal, window)
        if confidence < _latency.MIN_CONFIDENCE:
            raise LoopbackNotFoundError(
                f"the measurement signal did not come back on any of the {self.input_channels}"
                f" inputs within {window} frames (confidence {confidence:.1f} < "
                f"{_latency.MIN_CONFIDENCE:g}): connect the outputs to the inputs (a cable, "
                f"jack_connect or pw-link, a device's monitor) and measure again")
        return _latency.Latency(frames=lag, fraction=fraction, samplerate=self.samplerate,
                                reported_frames=reported, confidence=confidence,
                                input_channel=channel)

    def playrec(self, array: Any, latency: Latency | int | None = None) -> _np.ndarray:
        """Play ``array`` and return what the inputs captured, aligned to it.

        Parameters
        ----------
        array : array_like
            float32 frames, (frames,) or (frames, channels) as :meth:`play` takes them.
        latency : Latency, int or None
            The round trip (a :class:`~streamcore.latency.Latency`, or frames >= 0); None:
            :meth:`measure_latency` first.

        Returns
        -------
        numpy.ndarray
            float32, (frames, input_channels): element k was captured when element k of
            ``array`` came back through the loopback.  Through a digital loopback it equals
            ``array`` exactly.

        Raises
        ------
        TypeError, ValueError
            A bad ``array`` or ``latency``, or the engine has no input.
        LoopbackNotFoundError
            ``latency`` None and no loopback was found.
        SinkError
            The device failed, or glitched (an xrun, lost frames) in each of 3 runs: a run
            it glitched in is not aligned for sure and is made again.
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread; blocks for the array's length plus a little.  The engine must be
        running.
        """
        if latency is None:
            latency = self.measure_latency()
        frames = latency.frames if isinstance(latency, _latency.Latency) else positive_int(
            "latency", latency, 0, 1 << 30)
        data = _np.asarray(array, dtype=_np.float32)
        if data.ndim not in (1, 2) or data.shape[0] == 0:
            raise ValueError(f"array must hold frames: (frames,) or (frames, channels), not "
                             f"shape {data.shape}")
        recorded, _reported = self._play_and_record(data, data.shape[0], frames)
        return _np.array(recorded)

    def _play_and_record(self, array: Any, frames: int, delay: int
                         ) -> tuple[_np.ndarray, int | None]:
        """Play ``array`` from an output frame far enough ahead and record ``frames`` input
        frames from the input frame that leaves the device with it, plus ``delay``.
        Returns (the recording, the host's reported round trip).  A run the device glitched
        in (its clocks moved apart, frames lost, the signal late) is run again, up to
        ``_PLAYREC_TRIES`` times in all, then the last glitch is raised."""
        for _ in range(_PLAYREC_TRIES - 1):
            with contextlib.suppress(_Glitched):
                return self._play_and_record_once(array, frames, delay)
        return self._play_and_record_once(array, frames, delay)  # the last one raises

    def _play_and_record_once(self, array: Any, frames: int, delay: int
                              ) -> tuple[_np.ndarray, int | None]:
        self._input()
        if not self.running:
            raise ValueError("start() the engine first: the measurement plays and records")
        before = self._device_clocks()
        # Ahead of everything rendered (the fill) by a tenth of a second: the ADD reaches
        # the mixer before it renders that frame, so the voice starts exactly there.
        play_at = self.frame + int(before["fill"]) + self.samplerate // 10
        recording = self.record(frames, at=play_at + before["io_offset"] + delay)
        try:
            voice = self.play(array, at=play_at)
        except BaseException:
            recording.stop()
            raise
        limit = (max(frames, _np.shape(array)[0]) + delay) / self.samplerate + 5.0
        voice.wait(limit)
        recording.wait(limit)
        if not recording.done:
            recording.stop()
            raise SinkError(f"the recording did not complete within {limit:.1f} s: the "
                            f"device stopped capturing")
        after = self._device_clocks()
        if voice.start_frame != play_at:
            raise _Glitched(f"the signal started at output frame {voice.start_frame}, not "
                            f"{play_at} as asked, {_PLAYREC_TRIES} times: the mixer falls "
                            f"behind")
        if after["io_offset_changes"] != before["io_offset_changes"]:
            raise _Glitched(f"the device glitched during each of {_PLAYREC_TRIES} runs (its "
                            f"input and output clocks moved apart: an xrun): the alignment "
                            f"is not trusted; try a larger blocksize or periods")
        if recording.overflows:
            raise _Glitched(f"captured frames were lost in each of {_PLAYREC_TRIES} runs (the "
                            f"mixer stalled)")
        return recording.data, after["reported"]

    def _device_clocks(self) -> dict[str, Any]:
        """The device's io offset, its changes, the fill and the host's reported round trip."""
        sink = self.stats().sink
        if "io_offset" not in sink:
            raise ValueError("the sink does not relate its input and output clocks")
        out, inp = sink.get("latency_frames"), sink.get("input_latency_frames")
        reported = None if out is None or inp is None else int(out) + int(inp)
        return {"io_offset": int(sink["io_offset"]),
                "io_offset_changes": int(sink["io_offset_changes"]),
                "fill": int(sink.get("fill_frames") or self.periods * self.blocksize),
                "reported": reported}

    @property
    def voices(self) -> list[Voice]:
        """The voices not yet handed back (a new list).

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread; reaps the voices the mixer returned first.
        """
        with self._lock:
            self._check_open()
            return self._table.voices()

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
        if self._clock != "manual":
            raise StreamcoreError("render() is for sink='manual'; this engine has a clock")
        periods = positive_int("periods", periods, 0, 1 << 20)
        out = _np.zeros((periods * self.blocksize, self.channels), dtype=self.dtype)
        with self._lock:
            self._check_open()
            check(_lib.sc_engine_render(self._handle, _ffi.from_buffer(out), periods),
                  "sc_engine_render")
            self._table.reap()
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
        with self._lock:
            self._check_open()
            return _telemetry.read_stats(self._handle, {}).frames

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
            Seconds (>= 0) to wait for the mixer's copy when ``consistent``.

        Returns
        -------
        EngineStats
            The figures (``streamcore.telemetry.EngineStats``); times in ns, counts in
            periods, cycles and frames; ``sink`` holds the sink object's figures.

        Raises
        ------
        TypeError, ValueError
            ``timeout`` is not a finite number >= 0.
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
        timeout = finite("timeout", timeout, 0.0)
        with self._lock:
            self._check_open()
            self._table.reap()
            per_voice = self._table.underruns_per_voice()
            if consistent and self._started:
                stats = _telemetry.EngineStats._from_native(self._snapshot(timeout), per_voice)
            else:
                stats = _telemetry.read_stats(self._handle, per_voice)
            if self.sink_object is not None:
                sink = self.sink_object.stats()
                if self.periods_asked is not None:  # the sink needed more: say so
                    sink["periods_asked"] = self.periods_asked
                    sink.setdefault("periods_note", (
                        f"periods raised from {self.periods_asked} to {self.periods}: the "
                        f"sink takes that much at once (a JACK server takes a whole period)"))
                stats = dataclasses.replace(stats, sink=sink)
            if self._capture is not None:
                stats = dataclasses.replace(stats, input=self._capture.stats())
            return dataclasses.replace(stats, reacquire=self._reacquirer.stats())

    def _snapshot(self, timeout: float) -> Any:
        """Ask the mixer for a one-cycle-consistent copy (caller holds the lock)."""
        self._snapshot_token = (self._snapshot_token + 1) & 0xFFFFFFFF or 1
        cmd = _ffi.new("sc_command *")
        cmd.op, cmd.slot, cmd.generation = _lib.SC_CMD_SNAPSHOT, 0, self._snapshot_token
        self._table.send(cmd)
        out = _ffi.new("sc_engine_stats *")
        deadline = time.monotonic() + timeout
        while _lib.sc_engine_get_snapshot(self._handle, out) != self._snapshot_token:
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
            Records at most, >= 0 (the trace keeps the last ``SC_TRACE_SLOTS``, 8192,
            cycles; more asks for all of them).

        Returns
        -------
        numpy.ndarray
            A copy, of ``streamcore.telemetry.TRACE_DTYPE``: times in ns (CLOCK_MONOTONIC),
            ``fill`` in frames.

        Raises
        ------
        TypeError, ValueError
            ``max_records`` is not an int >= 0.
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread; the mixer writes the trace without waiting for readers.
        """
        slots = _lib.SC_TRACE_SLOTS
        if isinstance(max_records, int | _np.integer) and max_records > slots:
            max_records = slots  # more than the trace keeps: all of it
        max_records = positive_int("max_records", max_records, 0, slots)
        with self._lock:
            self._check_open()
            return _telemetry.read_trace(self._handle, max_records)

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
        with self._lock:
            self._check_open()
            return self._events.all()

    @property
    def event_fd(self) -> int:
        """A file descriptor that becomes readable when the watchdog records an event.

        Select or poll it, then call :meth:`events`.  Owned by the engine: do not close it;
        it is closed with the engine.

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread.
        """
        with self._lock:
            self._check_open()
            return self._events.fd()

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
        The consuming thread only (the single reader of ``output``), once per period.  It
        takes the engine's lock (uncontended it costs well under a microsecond), so that a
        concurrent :meth:`close` is never in between.  A sink object uses its
        :class:`~streamcore.sinks.base.SinkContext` instead.
        """
        if self._clock != "external":
            raise StreamcoreError("period_consumed() is for sink='external'")
        with self._lock:
            self._check_open()
            _lib.sc_engine_period_consumed(self._handle, 1 if underrun else 0)

    def _test_spin(self, seconds: float, cycles: int = 1) -> None:
        """Test hook: the mixer busy-loops for ``seconds`` inside each of its next ``cycles``
        cycles (a runaway, for the watchdog's tests)."""
        with self._lock:
            self._check_open()
            _lib.sc_engine_test_spin(self._handle, int(seconds * 1e9), cycles)

    def subscribe(self, callback: Callable[[Event], object]) -> None:
        """Call ``callback(event)`` for every new watchdog event.

        Parameters
        ----------
        callback : callable
            Takes one ``streamcore.watchdog.Event``; what it returns is ignored.

        Raises
        ------
        TypeError
            ``callback`` is not callable.
        EngineClosedError
            The engine is closed.

        Notes
        -----
        The callbacks run in one Python thread of the engine ("streamcore-events"), which
        waits on :attr:`event_fd` and ends with :meth:`close` (a callback may call any
        method of the engine, ``close()`` included).  Any thread may subscribe.
        """
        with self._lock:
            self._check_open()
            self._events.subscribe(callback)

    def _watch_losses(self) -> None:
        """Have the re-acquisition hear of losses (lock held; once, when realtime was
        asked for, the watchdog looks and the policy is not 'never')."""
        if (self._watching_losses or not self.realtime or not self.watchdog_tid
                or self._reacquirer.policy == "never"):
            return
        self._watching_losses = True
        reacquirer = self._reacquirer

        def on_event(event: Event) -> None:
            if event.reason == "lost_realtime":
                reacquirer.lost()

        self._events.subscribe(on_event)

    def _regain(self) -> _realtime.RealtimeGrant | None:
        """Ask for realtime again for the mixer and the watchdog (the re-acquisition's timer
        thread); None when the engine no longer runs."""
        with self._lock:
            if self._closing or not self._started or self.failure is not None:
                return None
            self._acquire_realtime()
            return self.grant

    def _regained(self, grant: _realtime.RealtimeGrant) -> None:
        self._events.post(Event.made_here("realtime_regained", str(grant), tid=grant.tid,
                                          threads=1 + bool(self.watchdog_tid)))

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
            self._events.poll()
            last = self._events.last_demotion
            if last is not None:
                age = (time.monotonic_ns() - last) / 1e9
                if age < self.watchdog.cooldown:
                    raise RepromoteRefusedError(
                        f"the watchdog demoted the mixer {age:.2f} s ago; re-promotion is "
                        f"refused for {self.watchdog.cooldown} s after a demotion")
            self._acquire_realtime()  # the mixer, and the watchdog (the canary rule demotes it)
            _lib.sc_engine_rearm(self._handle)
            return self.grant

    # ---- the sink object: it sees a SinkContext, never the engine ----------------------------
    # open() once the output ring exists, start() once the mixer has filled it, stop() before
    # the mixer stops, drain() (optional) after it stopped, close() with the engine.  See
    # streamcore/sinks/base.py.

    def _open_sink(self) -> None:
        if self.sink_object is None or self._context is not None:
            return
        from streamcore.sinks.base import SinkContext

        assert self.output is not None  # made by start() just before
        ref = weakref.ref(self)  # the context must not keep the engine alive

        def stop_engine() -> None:
            engine = ref()
            if engine is not None and not engine._closing:
                engine._fail_locked(context.failure or "the sink failed")

        def running() -> bool:
            engine = ref()
            return engine is not None and engine._started

        def mixer_grant() -> _realtime.RealtimeGrant | None:
            engine = ref()
            return None if engine is None else engine.grant

        def move_mixer(priority: int) -> _realtime.RealtimeGrant:
            engine = ref()
            if engine is None:
                raise EngineClosedError(_CLOSED)
            return engine._move_mixer(priority)

        def notify(reason: str, detail: str) -> None:
            engine = ref()
            if engine is not None:
                engine._events.post(Event.made_here(reason, detail))

        context = SinkContext(self.output, self._handle, self.samplerate, self.blocksize,
                              self.channels, self.dtype, self.periods, self._lock,
                              stop_engine, running, mixer_grant, move_mixer, notify,
                              None if self._capture is None else self._capture.ring)
        try:
            self.sink_object.open(context)
        except BaseException:
            try:
                self.sink_object.close()
            finally:
                context.close()
            raise
        self._context = context

    def _move_mixer(self, priority: int) -> _realtime.RealtimeGrant:
        """Acquire realtime for the mixer at ``priority``; kept when it is realtime."""
        priority = positive_int("priority", priority, 1, 98)
        with self._lock:
            self._check_open()
            grant = _realtime.acquire_realtime(tid=self.mixer_tid, priority=priority)
            if grant.realtime:
                self.grant, self.priority = grant, priority
            return grant

    def _start_sink(self) -> None:
        if self.sink_object is None or self._context is None:
            return
        self._context.begin_start()
        try:
            self.sink_object.start()
        except BaseException:
            self._stop_locked()
            raise

    def _stop_sink(self) -> None:
        if self.sink_object is not None and self._context is not None:
            self._context.begin_stop()
            self.sink_object.stop()

    def _drain_sink(self) -> None:
        drain = getattr(self.sink_object, "drain", None)  # optional for sinks not on Sink
        if drain is not None and self._context is not None:
            drain()

    def _close_sink(self) -> None:
        sink = self.sink_object
        if sink is None:
            return
        from streamcore.sinks.base import unbind

        try:
            sink.close()
        finally:
            if self._context is not None:
                self._context.close()
            unbind(sink, self)

    def _disown(self) -> None:
        """After fork, in the child: the copy has none of the parent's threads.  Closing it
        would join threads that do not exist, so it is only marked closed."""
        lock = threading.RLock()  # a lock held by a parent thread stays held otherwise
        self._lock = lock
        self._handle = _ffi.NULL
        self._started = False
        self._closing = self._closed = True
        self._closed_event.set()
        self._writers._disown()  # first: the table's _disown ends voices, which tells it
        self._table._disown(lock)
        self._events._disown(lock)


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
        periods = positive_int("the sink's periods", wanted_periods, 2, _lib.SC_MAX_PERIODS)
    return dtype, periods


def _sink_hook(sink: Any) -> tuple[str, Any]:
    """('null' | 'manual' | 'external', Sink object or None) for ``Engine(sink=...)``."""
    from streamcore.sinks.base import Sink

    if isinstance(sink, str) and sink == "device":
        from streamcore.sinks.device import DeviceSink

        sink = DeviceSink()
    if isinstance(sink, Sink):
        return "external", sink
    if not isinstance(sink, str) or sink not in _SINKS:
        raise ValueError(f"sink must be one of {_SINKS} or a streamcore.sinks.Sink, "
                         f"not {sink!r}")
    return sink, None


def _tids(engine_ptr: Any) -> tuple[int, int, int]:
    s = _ffi.new("sc_engine_stats *")
    _lib.sc_engine_get_stats(engine_ptr, s)
    return s.mixer_tid, s.watchdog_tid, s.canary_tid


# ---- every live engine: closed at interpreter exit, disowned after fork ------------------------

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def _close_engines_at_exit() -> None:
    """The exit hook: stop and free every engine still open, while every module still works.

    Without it the interpreter's teardown frees an engine's rings (the output ring, a voice's
    array) while its C mixer still reads them.  Each engine closed here gets a
    ResourceWarning, like one collected open."""
    for engine in list(_engines):
        if engine.closed:
            continue
        warnings.warn(f"unclosed {engine!r} at interpreter exit: closing it (use `with "
                      f"Engine(...)` or call close())", ResourceWarning, stacklevel=1,
                      source=engine)
        try:
            engine.close()
        except Exception:  # one engine's failure must not leave the others running
            traceback.print_exc()


atexit.register(_close_engines_at_exit)  # once, at import: before any engine exists


_GRANTED_POLICY = {"fifo": os.SCHED_FIFO, "rr": os.SCHED_RR}


def _disown_engines_in_child() -> None:
    """After fork: the child has a copy of each engine's memory but none of its threads.
    The child's engines are only marked closed (the parent's engines are unaffected)."""
    for engine in list(_engines):
        engine._disown()


os.register_at_fork(after_in_child=_disown_engines_in_child)
