"""The sink protocol: what ``Engine(sink=...)`` accepts besides the built-in strings, and the
:class:`SinkContext` through which a sink sees its engine.

A sink consumes the engine's output ring on the *consumer clock* (the engine's
``sink='external'`` mode): it reads one period at a time from ``context.output`` (single
reader), advances the ring, and then calls ``context.period_consumed()`` (C:
``sc_engine_period_consumed(context.engine_handle, underrun)``), which wakes the mixer at once
to render the next.  A sink never sees the :class:`~streamcore.Engine` itself: everything it
may use is on the context (the output ring, the native engine handle, the format, the failure
callback).

Life cycle, driven by the engine (every call from the Python thread that drives the engine):

0. ``output_format(blocksize, channels)``: asked by the engine's constructor, once the sink
   is bound to that engine (a sink serves one engine at a time: a second engine gets
   :class:`~streamcore.errors.SinkInUseError` until the first is closed).
1. ``open(context)``: the engine's output ring exists (``context.output``), the mixer is not
   running yet.  Prepare and validate here; raise a clear error (the engine then closes the
   sink and re-raises).
2. ``start()``: the mixer runs on the consumer clock and has filled the ring; begin
   consuming.
3. ``stop()``: stop consuming (idempotent).  What is drained first is the sink's contract
   (the device sink drops what is queued; the file sink writes every rendered period).
   The engine calls it BEFORE it stops the mixer.  ``start()`` may follow again (the
   engine was stopped and started).
4. ``drain()`` (optional, default: nothing): called once the mixer has stopped; a sink
   that promises "nothing rendered is lost" (the file sink) consumes what is left in the
   ring here.  Not called after a failed ``open``.
5. ``close()``: release everything (idempotent; also after a failed ``open``).  A sink may
   raise here (e.g. :class:`~streamcore.errors.SinkError` for a write that failed earlier);
   the engine frees its own resources first.  The context is closed right after: its
   methods then raise :class:`~streamcore.errors.EngineClosedError`.  Another engine may
   open the sink again.

When a sink fails on its own thread it sets ``error``, stops consuming, and calls
``context.fail(reason)``, which stops the engine from that thread unless someone else is
already stopping it; ``stop()`` must then not join the calling thread.

``stats()`` is merged into ``engine.stats().sink`` (a plain dict).  ``error`` is None until
the sink fails for good (reader gone, server died, disk full); it is a one-line sentence
saying what happened, and the sink has stopped consuming by then.  ``engine.stats().sink``
carries it as ``'error'``.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.errors import EngineClosedError, SinkInUseError
from streamcore.telemetry import frames_taken

if TYPE_CHECKING:
    import numpy as _np

    from streamcore.realtime import RealtimeGrant
    from streamcore.ring import Ring

__all__ = ["Sink", "SinkContext", "bind", "unbind"]

_CLOSED = "the sink's engine is closed"


class SinkContext:
    """What a sink may use of its engine: output ring, native handle, format, failure callback.

    Parameters
    ----------
    output : Ring
        The engine's output ring; the sink is its single reader from ``start()`` to
        ``stop()``.
    engine_handle : cffi pointer
        The native ``sc_engine *`` (for C sinks: ``sc_device_sink_create``,
        ``sc_pipe_sink_create``); valid until the sink's ``close()`` returned.
    samplerate : int
        Hz.
    blocksize : int
        Frames per period.
    channels : int
        Output channels.
    dtype : numpy.dtype
        The output samples: float32, int16 or int32.
    periods : int
        Periods in the output ring.
    lock : threading.RLock
        The engine's lock (:meth:`fail` takes it to stop the engine).
    stop_engine : callable
        Stops the engine; called by :meth:`fail` with ``lock`` held.
    running : callable
        Returns True while the engine's mixer runs.
    mixer_grant : callable
        Returns the mixer's :class:`~streamcore.realtime.RealtimeGrant` (None: not asked).
    move_mixer : callable
        ``move_mixer(priority)`` acquires realtime for the mixer at ``priority`` and returns
        the new grant (the engine keeps it only when it is realtime).
    notify : callable or None
        ``notify(reason, detail)`` delivers an event to the engine's ``events()`` and
        ``subscribe()`` callbacks (None: events are dropped).
    capture : Ring or None
        ``Engine(input_channels=N)``: the ring the sink writes captured frames into (its
        single writer, from start to stop; the mixer reads it).

    Notes
    -----
    Made by the engine, handed to :meth:`Sink.open`.  The format attributes are plain values;
    the rest raises :class:`~streamcore.errors.EngineClosedError` once the engine closed the
    context (right after the sink's ``close()``).  Any thread may use it; the
    callables are the engine's, bound weakly so that a sink never keeps its engine alive.
    """

    def __init__(self, output: Ring, engine_handle: Any, samplerate: int, blocksize: int,
                 channels: int, dtype: _np.dtype, periods: int, lock: Any,
                 stop_engine: Callable[[], None], running: Callable[[], bool],
                 mixer_grant: Callable[[], RealtimeGrant | None],
                 move_mixer: Callable[[int], RealtimeGrant],
                 notify: Callable[[str, str], None] | None = None,
                 capture: Ring | None = None) -> None:
        self._output: Ring | None = output
        #: The capture ring (float32, the engine's input channels) a sink that captures
        #: writes every captured frame into, or None: the engine has no input.
        self.capture = capture
        self._handle = engine_handle
        self.samplerate = samplerate  #: Hz
        self.blocksize = blocksize    #: frames per period
        self.channels = channels      #: output channels
        self.dtype = dtype            #: the output samples (numpy dtype)
        self.periods = periods        #: periods in the output ring
        self._lock = lock
        self._stop_engine = stop_engine
        self._running = running
        self._mixer_grant = mixer_grant
        self._move_mixer = move_mixer
        self._notify = notify
        self._stopping = threading.Event()  # set by the engine before it stops the sink
        self.failure: str | None = None  #: the first reason given to :meth:`fail`

    def __repr__(self) -> str:
        state = "closed" if self._output is None else "open"
        return (f"<SinkContext {state} {self.samplerate} Hz, {self.blocksize} frames x "
                f"{self.periods}, {self.channels} ch, {self.dtype}>")

    @property
    def closed(self) -> bool:
        """True once the engine closed the context (after the sink's ``close()``).

        Notes
        -----
        Any thread.
        """
        return self._output is None

    @property
    def output(self) -> Ring:
        """The engine's output ring (the sink reads it).

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread; reading is for the sink's consuming thread only.
        """
        output = self._output
        if output is None:
            raise EngineClosedError(_CLOSED)
        return output

    @property
    def engine_handle(self) -> Any:
        """The native ``sc_engine *``, for the sink's C side.

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread.  Valid until the sink's ``close()`` returns: a C object made with it
        must be freed there.
        """
        handle = self._handle
        if handle == _ffi.NULL:
            raise EngineClosedError(_CLOSED)
        return handle

    def deliverable(self) -> int | None:
        """How far into this run a sink that is not a clock may write now (None: all of it).

        The run's end once known; else, for a 'reader' sink, the last frame a voice played so
        far (the silence after it is written only if more audio follows).

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread; atomic reads of the engine.
        """
        frames = int(_lib.sc_engine_deliverable(self.engine_handle))
        return None if frames == (1 << 64) - 1 else frames

    def run_start(self) -> int:
        """Where the current run's frame 0 is in the output ring.

        Its write index when the run started: what an earlier run left in the ring lies
        before it.

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread; stable from the engine's start until its next start.
        """
        return int(_lib.sc_engine_run_start(self.engine_handle))

    def frames_taken(self) -> int:
        """Frames of this run the sink has taken out of the output ring so far.

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread.
        """
        return frames_taken(self.engine_handle, self.output)

    @property
    def running(self) -> bool:
        """True while the engine's mixer runs.

        Notes
        -----
        Any thread.
        """
        return self._output is not None and self._running()

    @property
    def mixer_grant(self) -> RealtimeGrant | None:
        """How the mixer got realtime (None: not asked, or the engine is not running).

        Notes
        -----
        Any thread.
        """
        return None if self._output is None else self._mixer_grant()

    def move_mixer(self, priority: int) -> RealtimeGrant:
        """Acquire realtime for the mixer again at ``priority`` (e.g. below an audio thread).

        Parameters
        ----------
        priority : int
            The realtime priority, 1 .. 98.

        Returns
        -------
        RealtimeGrant
            The result; when it is realtime the engine keeps it (``engine.grant``,
            ``engine.priority``).

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        The thread that drives the engine (e.g. from the sink's ``start()``); may block on
        the system bus for up to 2 s.
        """
        if self._output is None:
            raise EngineClosedError(_CLOSED)
        return self._move_mixer(priority)

    def period_consumed(self, underrun: bool = False) -> None:
        """The sink took one period from :attr:`output`: wake the mixer to render the next.

        Parameters
        ----------
        underrun : bool
            The sink found less than a period (counted as an xrun).

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        The sink's consuming thread, between ``start()`` and the return of ``stop()``
        (the engine joins that thread before it frees the native engine, so no lock is
        taken: cheap enough for every period).
        """
        handle = self._handle
        if handle == _ffi.NULL:
            raise EngineClosedError(_CLOSED)
        _lib.sc_engine_period_consumed(handle, 1 if underrun else 0)

    @property
    def fill(self) -> int:
        """The frames the mixer keeps rendered ahead in :attr:`output`.

        ``periods * blocksize`` until :meth:`set_fill` changed it.

        Raises
        ------
        EngineClosedError
            The engine is closed.
        """
        handle = self._handle
        if handle == _ffi.NULL:
            raise EngineClosedError(_CLOSED)
        return int(_lib.sc_engine_fill(handle))

    def set_fill(self, frames: int) -> None:
        """Have the mixer keep ``frames`` rendered ahead from its next cycle on.

        A host whose period grew while running needs a period more than it takes at once.

        Parameters
        ----------
        frames : int
            Whole periods, at least two, at most :attr:`output`'s capacity.

        Raises
        ------
        ValueError
            Not whole periods, or fewer than two.
        OverflowError
            More than the output ring holds.
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread, while the engine runs (the mixer reads it once per cycle).
        """
        handle = self._handle
        if handle == _ffi.NULL:
            raise EngineClosedError(_CLOSED)
        rc = _lib.sc_engine_set_fill(handle, frames)
        if rc == -errno.ENOSPC:
            raise OverflowError(f"a fill of {frames} frames is more than the output ring "
                                f"holds ({self.output.capacity} frames)")
        if rc < 0:
            raise ValueError(f"a fill must be whole periods of {self.blocksize} frames, at "
                             f"least two, not {frames}")

    def taint(self, flags: int) -> None:
        """Mark the run unclean, e.g. for a server's xrun seen by a sink's own thread.

        Parameters
        ----------
        flags : int
            SC_TAINT_* bits (``streamcore._native.lib``).

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread.
        """
        handle = self._handle
        if handle == _ffi.NULL:
            raise EngineClosedError(_CLOSED)
        _lib.sc_engine_taint(handle, flags)

    def notify(self, reason: str, detail: str) -> None:
        """Deliver an event to the engine's ``events()`` and ``subscribe()`` callbacks.

        Parameters
        ----------
        reason : str
            A word, e.g. 'host_period_changed'.
        detail : str
            A sentence: what happened and what was done.

        Notes
        -----
        Any thread; dropped once the engine is closed.
        """
        if self._notify is not None and self._handle != _ffi.NULL:
            self._notify(reason, detail)

    def fail(self, reason: str) -> None:
        """The sink failed for good (``reason`` says why): stop the engine from this thread.

        Parameters
        ----------
        reason : str
            One sentence (the sink's ``error``).

        Notes
        -----
        The sink's own thread (a monitor or writer), never a realtime thread.  Returns without
        stopping anything when someone else is already stopping the engine (the sink's
        ``stop()`` is then on its way and must not be waited for here), or once the engine
        is closed.  Otherwise it takes the engine's lock and stops the engine, which calls
        the sink's ``stop()`` from this very thread.
        """
        if self.failure is None:
            self.failure = reason
        while not self._stopping.is_set() and self._output is not None:
            if self._lock.acquire(timeout=0.05):
                try:
                    if not self._stopping.is_set() and self._output is not None:
                        self._stop_engine()
                finally:
                    self._lock.release()
                return

    # ---- for the engine ------------------------------------------------------------------------

    def begin_start(self) -> None:
        """The engine is about to start the sink (a later :meth:`fail` may stop it).

        Notes
        -----
        Called by the engine, under its lock.
        """
        self._stopping.clear()

    def begin_stop(self) -> None:
        """The engine is about to stop the sink (a :meth:`fail` now returns at once).

        Notes
        -----
        Called by the engine, under its lock, before the sink's ``stop()``.
        """
        self._stopping.set()

    def close(self) -> None:
        """The sink is closed: forget the ring and the native engine (freed next).

        Notes
        -----
        Called by the engine, under its lock, after the sink's ``close()``; idempotent.
        """
        self._stopping.set()
        self._output = None
        self._handle = _ffi.NULL


_binding = threading.Lock()


def _new_binding_lock_in_child() -> None:
    global _binding
    _binding = threading.Lock()  # a parent thread may have held it at fork


os.register_at_fork(after_in_child=_new_binding_lock_in_child)


def bind(sink: Sink, owner: object) -> None:
    """Make ``owner`` (an engine) the one user of ``sink`` until :func:`unbind`.

    Parameters
    ----------
    sink : Sink
        The sink given to the engine.
    owner : object
        The engine (held weakly: a collected engine frees the sink too).

    Raises
    ------
    SinkInUseError
        Another engine that is not closed holds the sink.

    Notes
    -----
    Any thread (a lock makes the check and the claim one step).
    """
    with _binding:
        ref = sink._owner
        current = None if ref is None else ref()
        if current is not None and current is not owner:
            raise SinkInUseError(f"sink {sink!r} belongs to another engine ({current!r}); a "
                                 f"sink serves one engine at a time: close that engine first, "
                                 f"or give each engine its own sink")
        sink._owner = weakref.ref(owner)


def unbind(sink: Sink, owner: object) -> None:
    """Release ``sink`` from ``owner`` (nothing happens if another engine holds it).

    Parameters
    ----------
    sink : Sink
        The sink.
    owner : object
        The engine that bound it.

    Notes
    -----
    Any thread; called by the engine when it closes (or when its constructor failed).
    """
    with _binding:
        ref = sink._owner
        current = None if ref is None else ref()
        if current is None or current is owner:
            sink._owner = None


class Sink:
    """A consumer of the engine's output ring (base class; subclasses override the hooks).

    Notes
    -----
    Concurrency: the life-cycle methods are called by the engine from one Python thread at a
    time; the sink's own consuming thread (a PortAudio callback, a C or Python thread) is
    the ring's single reader from ``start()`` until ``stop()`` returns.  ``name`` labels the
    sink, ``error`` is None until it fails for good, ``context`` (a :class:`SinkContext`) is
    set by :meth:`open`.  A sink belongs to one engine at a time (from the engine's
    constructor to its ``close()``) and may be started again after a stop.
    """

    name: str = "sink"
    #: How the sink takes the output, which sets what the engine renders while nothing plays
    #: ("Streams have ends"): 'clock' (a device or a timer: time passes, silence is audio),
    #: 'reader' (as fast as its reader takes it: only what voices play, no silence before,
    #: between or after them) or 'paced' (at the sample rate, from the first voice on).
    timing: str = "clock"
    #: True for a sink that can capture (``Engine(input_channels=N)``): it writes every
    #: captured frame into ``context.capture``.
    captures: bool = False
    error: str | None = None
    context: SinkContext | None = None
    _owner: Any = None  # weakref to the engine that holds the sink (see bind())

    def output_format(self, blocksize: int, channels: int) -> tuple[str | None, int | None]:
        """The (dtype, periods) the engine's output ring must have for this sink.

        The pipe sink needs its own dtype (no conversion, so no copy) and exactly two
        pipe-sized halves; the base class needs nothing.

        Parameters
        ----------
        blocksize : int
            The engine's period, in frames.
        channels : int
            The engine's channels.

        Returns
        -------
        tuple of (str or None, int or None)
            The numpy dtype name of the samples and the periods in the ring, each None where
            the sink has no need.

        Notes
        -----
        Asked once by the engine's constructor, in its thread, before the ring exists.
        """
        return None, None

    def min_periods(self, blocksize: int) -> int | None:
        """The fewest periods the engine's output ring needs for this sink (None: no need).

        A device whose server takes more than a period at once (a JACK server's period is
        taken in one burst) needs the ring to hold that much plus a period.

        Parameters
        ----------
        blocksize : int
            The engine's period, in frames.

        Returns
        -------
        int or None

        Notes
        -----
        Asked once by the engine's constructor, in its thread, after :meth:`output_format`;
        the engine takes the larger of this and its ``periods``.
        """
        return None

    def ring_frames(self, blocksize: int) -> int | None:
        """The output ring's capacity this sink wants beyond ``periods * blocksize``.

        Room for :meth:`SinkContext.set_fill` to grow into while running, for a host that
        may change its period (a JACK server: up to its largest period plus a period).

        Parameters
        ----------
        blocksize : int
            The engine's period, in frames.

        Returns
        -------
        int or None
            Frames; None: ``periods * blocksize`` is enough.

        Notes
        -----
        Asked by the engine when it makes the output ring (its first start), in its thread.
        The capacity does not add latency: the mixer keeps only the fill rendered ahead.
        """
        return None

    def open(self, context: SinkContext) -> None:
        """Prepare to consume ``context.output`` (the ring exists, the mixer is not running).

        Parameters
        ----------
        context : SinkContext
            The output ring, the native engine, the format and the failure callback.

        Notes
        -----
        Called by ``Engine.start()`` in its thread (once per engine).  A sink raises here
        when it cannot run; the engine then closes the sink and re-raises.
        """
        self.context = context

    def native_driver(self) -> Any:
        """The sink's own native driver for the engine's mixer, or None (the default).

        A sink whose consumer the mixer thread itself can serve (the pipe sink, straight into
        a pipe: the mixer vmsplices what it rendered and waits for the reader) returns the
        ``sc_driver *`` of its native part; the engine gives it to ``sc_engine_start`` and
        uses it until it stops (see native/driver.h).  None: the engine runs on its consumer
        clock and the sink's own thread signals each period it took.

        Returns
        -------
        cffi pointer or None
            An ``sc_driver *`` that stays valid while the sink is open, or None.

        Notes
        -----
        Called by ``Engine.start()`` in its thread, after :meth:`open`, every start.
        """
        return None

    def start(self) -> None:
        """Begin consuming (the mixer already runs on the consumer clock); pairs with :meth:`stop`.

        Notes
        -----
        Called by ``Engine.start()`` in its thread, once the mixer has filled the ring.
        """

    def stop(self) -> None:
        """Stop consuming; idempotent.  Pairs with :meth:`start`.

        Notes
        -----
        Called by ``Engine.stop()`` before it stops the mixer, from the engine's caller's
        thread or from the sink's own thread after a failure (then it must not join itself).
        """

    def delivered(self, end_frame: int) -> bool:
        """After ``Engine.drain()``: whether every frame before ``end_frame`` left the engine.

        The default: the output ring no longer holds any of them.

        Parameters
        ----------
        end_frame : int
            The run's end (frames since the run's start).

        Returns
        -------
        bool

        Notes
        -----
        Called by ``Engine.drain()`` in its thread, repeatedly, until True.
        """
        context = self.context
        return context is None or context.frames_taken() >= end_frame

    def drain(self) -> None:
        """After the mixer stopped: consume what is left in the ring, if the sink promises it.

        Notes
        -----
        Called by ``Engine.stop()`` in its thread once the mixer has stopped; the default does
        nothing.  Not called after a failed :meth:`open`.
        """

    def close(self) -> None:
        """Release every resource; idempotent, and safe after a failed :meth:`open`.

        Notes
        -----
        Called by ``Engine.close()`` in its thread, after the engine stopped.  A sink may
        raise here (e.g. :class:`~streamcore.errors.SinkError` for a write that failed
        earlier); the engine still frees its own resources.
        """

    def stats(self) -> dict[str, Any]:
        """Figures of the sink, merged into ``engine.stats().sink``.

        Returns
        -------
        dict of str to Any
            At least ``name`` and ``error``.

        Notes
        -----
        Any thread (``Engine.stats()`` calls it under the engine's lock).
        """
        return {"name": self.name, "error": self.error}

    def __repr__(self) -> str:
        state = f" error={self.error!r}" if self.error else ""
        return f"<{type(self).__name__} {self.name}{state}>"
