"""Voices: what the engine mixes, and :class:`VoiceTable`, the slots they live in.

Created by ``Engine.play()`` and ``Engine.stream()``.  A :class:`Voice` plays a float32 numpy
array IN PLACE: the mixer reads the array's own memory, so the array must not be resized or
freed while the voice plays; the engine keeps a reference until the mixer hands the voice back
(``done``), and writing into the array meanwhile changes what is heard.  A
:class:`StreamVoice` plays what is written into its ring.

Pan law (``pan`` from -1 = left to +1 = right, on a stereo engine):

- a voice with as many channels as the engine (stereo): balance.  pan < 0 scales the right
  channel by (1 + pan), pan > 0 the left by (1 - pan); the other stays at ``gain``.  At pan 0
  and gain 1.0 the samples pass through bit-exact.
- a mono voice: constant power, left = gain·cos θ, right = gain·sin θ, θ = (pan + 1)·π/4
  (each side -3 dB at the centre).
- other layouts (a mono engine, more than two channels): every channel gets ``gain``; pan must
  be 0.

Gain and pan changes are ramped linearly over one period (blocksize frames); ``stop(fade)``
ramps to silence over ``fade`` seconds.

Ownership (the model is rtmixer's action queue with its keepalive table): the
:class:`VoiceTable` owns the slots, their generations and a pin for each busy slot, the
array or the ring handle (with its keepalive) that the C mixer reads.  A pin is taken before
the ADD command is queued and dropped only when the mixer hands the voice back through the
return queue (or after the native engine is freed), so nothing the mixer reads is ever freed
under it.  A ring the engine made for a stream voice is closed when the voice is handed back
(its fd, mappings and locked pages go then, or when the last view of it does); a user's ring
is only unpinned.

Concurrency: any Python thread may use a voice; the table serialises commands with the
engine's lock (the single producer of the C command queue) and the mixer applies them at the
start of its next period.  Once the engine is closed, the methods that need it
(:meth:`Voice.stop`, the ``gain`` and ``pan`` setters, :meth:`Voice.stats`) raise
:class:`~streamcore.errors.EngineClosedError`; ``done``, ``wait`` and the final counts stay
readable.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno as _errno
import itertools
import math
import os
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as _np

from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.errors import (
    CommandQueueFullError,
    EngineClosedError,
    LateStartError,
    RingClosedError,
    SinkError,
    StreamcoreError,
    VoiceLimitError,
    check,
)

if TYPE_CHECKING:
    from streamcore.ring import Ring

__all__ = ["MAX_VOICES", "StreamVoice", "Voice", "VoiceTable", "pan_gains"]

MAX_VOICES = _lib.SC_MAX_VOICES
_CLOSED = "the engine is closed; create a new Engine"
_LATE = {"play": _lib.SC_LATE_PLAY, "skip": _lib.SC_LATE_SKIP, "error": _lib.SC_LATE_REFUSE}
_END_REASONS = {_lib.SC_END_FINISHED: "finished", _lib.SC_END_STOPPED: "stopped",
                _lib.SC_END_FLUSHED: "flushed", _lib.SC_END_LATE: "late"}


def positive_int(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an int within ``lo .. hi``; TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | _np.integer):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be within {lo}..{hi}, not {value}")
    return int(value)


def finite(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    """``value`` as a finite float within ``lo .. hi``; TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | _np.floating | _np.integer):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{name} must be within {lo}..{hi}, not {value}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{name} must be within {lo}..{hi}, not {value}")
    return cast(float, value)  # converted by float() above


def pan_gains(gain: float, pan: float, voice_channels: int, engine_channels: int) -> list[float]:
    """The per-output-channel gains of the pan law above (what the mixer computes natively)."""
    gains = [gain] * engine_channels
    if engine_channels == 2:
        if voice_channels == 2:
            if pan > 0:
                gains[0] = gain * (1 - pan)
            elif pan < 0:
                gains[1] = gain * (1 + pan)
        else:
            theta = (pan + 1) * math.pi / 4
            gains = [gain * math.cos(theta), gain * math.sin(theta)]
    return gains


class VoiceTable:
    """The engine's voice slots: generations, the commands that add, change and stop voices,
    and the pins that keep what the mixer reads alive until it hands a voice back.

    Parameters
    ----------
    handle : cffi pointer
        The native ``sc_engine *``; used only under ``lock`` and only until :meth:`close`.
    lock : threading.RLock
        The engine's lock: every native call of the table is made holding it, after the
        closed check, so a concurrent ``Engine.close()`` is never in between.
    samplerate : int
        The engine's rate (fade lengths are given in seconds).
    channels : int
        The engine's output channels (which voice layouts and pans are possible).

    Notes
    -----
    Made by the engine, never by hand; the engine's facade and the voices call it.  Any
    Python thread may call any method.  The C command queue has one producer: this table
    (the engine's stats snapshots go through :meth:`send` too).
    """

    def __init__(self, handle: Any, lock: Any, samplerate: int, channels: int) -> None:
        self._handle = handle
        self._lock = lock
        self._samplerate = samplerate
        self._channels = channels
        #: The sink's failure (set by the engine when its sink failed for good): voices the
        #: engine flushes from then on end as 'failed', and wait() raises.
        self.failure: str | None = None
        #: True once a caller was told of :attr:`failure` (a wait() or a play() raised it):
        #: the engine's close() then does not raise it again.
        self.failure_reported = False
        #: True while the mixer runs (set by the engine): a full command queue is then
        #: waited for, up to 1 s, instead of refused at once.
        self.running = False
        self._closed = False
        self._free = collections.deque(range(MAX_VOICES))
        self._generations = [0] * MAX_VOICES
        self._voices: dict[int, Voice] = {}
        # slot -> (what keeps the C side's pointer valid, the ring to close when handed back,
        # the ring handle whose reading side this process claimed, to leave then)
        self._pins: dict[int, tuple[object, Ring | None, Any]] = {}
        # slot -> the end reason of a voice the engine stops for a reason of its own (its
        # producer died): the mixer hands it back as 'stopped'
        self._end_causes: dict[int, str] = {}
        self._cmd = _ffi.new("sc_command *")      # reused under the lock
        self._ret = _ffi.new("sc_voice_return *")  # reused under the lock
        self._watcher: threading.Thread | None = None  # see watch_ends()
        self._watch_stop: int | None = None  # an eventfd that ends the watcher

    # ---- the lock and the closed check --------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError(_CLOSED)

    def watch_ends(self) -> None:
        """Start (once) the thread that reaps voices as the mixer hands them back.

        Notes
        -----
        From then on the mixer writes the engine's end eventfd once per voice it hands back
        (one syscall per voice end), and this thread, blocked in poll() on it, reaps at
        once: every voice's ``_done`` event and done-callbacks fire without anyone polling.
        It ends with the table (:meth:`close`).  It polls its own duplicate of the end fd
        (the engine's is closed with the engine, while the thread may still be leaving).
        """
        with self._lock:
            if self._watcher is not None or self._closed:
                return
            stop = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            end_fd = os.dup(_lib.sc_engine_end_fd(self._handle))
            self._watch_stop = stop
            _lib.sc_engine_watch_ends(self._handle, 1)
            self._watcher = threading.Thread(target=self._watch, args=(end_fd, stop),
                                             name="streamcore-voice-ends", daemon=True)
            self._watcher.start()
        self.reap()  # what ended before the mixer was told to write the fd

    def _watch(self, end_fd: int, stop_fd: int) -> None:
        poller = select.poll()
        poller.register(end_fd, select.POLLIN)
        poller.register(stop_fd, select.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())  # releases the GIL; no timeout: woken by the fds
                if stop_fd in ready:
                    return
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(end_fd)
                self.reap()
        finally:
            os.close(end_fd)
            os.close(stop_fd)

    def progress_fd(self) -> int:
        """The engine's progress eventfd (see :meth:`watch_progress`)."""
        with self._lock:
            self._check_open()
            return int(_lib.sc_engine_progress_fd(self._handle))

    def watch_progress(self, delta: int) -> None:
        """Count one more (+1) or one fewer (-1) waiter for the progress eventfd, which the
        mixer writes once per cycle while any is counted."""
        with self._lock:
            if not self._closed:
                _lib.sc_engine_watch_progress(self._handle, delta)

    def mixing(self) -> bool:
        """True while the engine's mixer runs (it reads the stream voices' rings).

        Returns
        -------
        bool
            Started, not stopped, and not ended on its own (a sink's failure).
        """
        with self._lock:
            return (not self._closed and self.running
                    and bool(_lib.sc_engine_mixing(self._handle)))

    def ended(self, voice: Voice) -> bool:
        """True once the mixer handed ``voice`` back, maybe before its return is published.

        Notes
        -----
        Any thread.  The mixer marks the end before it wakes the voice's ring and publishes
        the return after: a writer woken by that wake looks here (the return may still be
        on its way, and no second wake follows).
        """
        with self._lock:
            return self._closed or bool(_lib.sc_engine_voice_ended(
                self._handle, voice._slot, voice._generation))

    @property
    def free_slots(self) -> int:
        """Slots free for a new voice (after reaping what the mixer handed back).

        Notes
        -----
        Any thread.
        """
        with self._lock:
            self.reap()
            return len(self._free)

    def voices(self) -> list[Voice]:
        """The voices not yet handed back, after reaping.

        Returns
        -------
        list of Voice
            A new list.

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
            self.reap()
            return list(self._voices.values())

    # ---- commands ---------------------------------------------------------------------------

    def send(self, cmd: Any) -> None:
        """Queue one command; waits up to 1 s for room while the mixer runs.

        Parameters
        ----------
        cmd : cffi pointer
            An ``sc_command *`` filled by the caller.

        Raises
        ------
        EngineClosedError
            The engine is closed.
        CommandQueueFullError
            No room within 1 s (or at once when the mixer is not running).
        NativeError
            The engine refused the command.

        Notes
        -----
        Any thread; takes the engine's lock (the queue's single producer).
        """
        with self._lock:
            self._check_open()
            deadline = time.monotonic() + 1.0
            while True:
                status = _lib.sc_engine_command(self._handle, cmd)
                if status != -_errno.EAGAIN:  # full: wait for the mixer
                    check(status, "sc_engine_command")
                    return
                running = self.running
                if not running or time.monotonic() > deadline:
                    raise CommandQueueFullError(
                        "the mixer's command queue is full"
                        + ("" if running else " (render periods to apply commands)"))
                time.sleep(0.001)

    def check_gain_pan(self, gain: Any, pan: Any) -> tuple[float, float]:
        """``(gain, pan)`` checked against the engine's layout.

        Parameters
        ----------
        gain : float
            Linear, -64 .. 64.
        pan : float
            -1 .. 1; not 0 only on a stereo engine.

        Returns
        -------
        tuple of (float, float)
            The values as floats.

        Raises
        ------
        TypeError
            Not a number.
        ValueError
            Not finite, out of range, or a pan on an engine that is not stereo.

        Notes
        -----
        Any thread; pure.
        """
        gain = finite("gain", gain, -64.0, 64.0)
        pan = finite("pan", pan, -1.0, 1.0)
        if pan != 0.0 and self._channels != 2:
            raise ValueError(f"pan needs a stereo engine (this one has {self._channels} "
                             f"channels)")
        return gain, pan

    def channel_map(self, channels: Any) -> list[int]:
        """A voice's channel map (``channels=[2, 3]``) checked against the engine.

        Parameters
        ----------
        channels : list of int
            The output channel of each of the voice's channels: distinct, 0 .. the engine's
            channels - 1.

        Returns
        -------
        list of int
            The map.

        Raises
        ------
        TypeError
            Not a list or tuple of ints.
        ValueError
            Empty, an entry out of range, or a channel named twice.

        Notes
        -----
        Any thread; pure.
        """
        if not isinstance(channels, list | tuple):
            raise TypeError(f"channels must be an int or a list of output channels, not "
                            f"{type(channels).__name__}")
        if not channels:
            raise ValueError("channels must name at least one output channel")
        mapping = [positive_int("an output channel", c, 0, self._channels - 1)
                   for c in channels]
        if len(set(mapping)) != len(mapping):
            raise ValueError(f"channels names an output channel twice: {list(channels)}")
        return mapping

    def fade_frames(self, name: str, seconds: Any) -> int:
        """A fade of ``seconds`` (0 .. 3600) in frames.

        Parameters
        ----------
        name : str
            The argument's name, for the error.
        seconds : float
            The fade's length.

        Returns
        -------
        int
            Frames at the engine's rate.

        Raises
        ------
        TypeError
            Not a number.
        ValueError
            Not finite or outside 0 .. 3600 s.

        Notes
        -----
        Any thread; pure.
        """
        return round(finite(name, seconds, 0.0, 3600.0) * self._samplerate)

    def add(self, kind: int, source: Any, channels: int, gain: Any, pan: Any,
            at: int | None, fade_in: Any, loop: bool = False, owned: bool = False,
            cls: type[Voice] | None = None, monitor: list[int] | None = None,
            late: str = "play", output_map: list[int] | None = None) -> Voice:
        """Pin ``source``, take a slot and queue the ADD command: a new playing voice.

        Parameters
        ----------
        kind : int
            ``SC_VOICE_BUFFER`` (``source`` is a checked float32 C-contiguous array),
            ``SC_VOICE_STREAM`` (``source`` is a float32 :class:`~streamcore.Ring`) or
            ``SC_VOICE_RECORD`` (``source`` is a writable float32 C-contiguous array the
            mixer fills with captured frames; ``at`` is an input frame).
        source : numpy.ndarray or Ring
            What the mixer reads.
        channels : int
            The voice's channels: 1 or the engine's.
        gain : float
            Linear gain, -64 .. 64.
        pan : float
            -1 .. 1.
        at : int or None
            The output frame to start at (0 .. 2**62); None: the next period.
        fade_in : float
            Seconds of the fade-in, 0 .. 3600.
        loop : bool
            Buffer voices: repeat until stopped.
        owned : bool
            Stream voices: the engine made the ring, and closes it when the voice is handed
            back (also when the ADD fails).
        cls : type or None
            The handle's class (a :class:`Voice` subclass); None: :class:`Voice`, or
            :class:`StreamVoice` for ``SC_VOICE_STREAM``.
        monitor : list of int or None
            Stream voices: the mixer's capture step writes the input into the ring, the
            voice's channel c from input channel ``monitor[c]`` (input monitoring).
        late : str
            When ``at`` was already rendered: 'play' (from the first frame, late), 'skip'
            (the frames already due are skipped) or 'error' (not played: ``end_reason``
            'late', :meth:`Voice.wait` raises LateStartError).
        output_map : list of int or None
            The voice's channel c plays on output channel ``output_map[c]`` only (checked by
            :meth:`channel_map`; ``pan`` must be 0); None: the usual layouts.

        Returns
        -------
        Voice
            A :class:`Voice`, or a :class:`StreamVoice` for ``SC_VOICE_STREAM``.

        Raises
        ------
        TypeError, ValueError
            A bad ``gain``, ``pan``, ``at`` or ``fade_in``.
        RingClosedError
            The ring was closed (perhaps by another thread) before it could be pinned.
        EngineClosedError
            The engine is closed.
        VoiceLimitError
            All ``MAX_VOICES`` slots are busy.
        CommandQueueFullError
            The mixer took no command for 1 s.

        Notes
        -----
        Any thread.
        """
        try:
            if late not in _LATE:
                raise ValueError(f"late must be 'play', 'skip' or 'error', not {late!r}")
            gain, pan = self.check_gain_pan(gain, pan)
            start = -1 if at is None else positive_int("at", at, 0, 2**62)
            fade = self.fade_frames("fade_in", fade_in)
            with self._lock:
                self._check_open()
                self.reap()
                if not self._free:
                    raise VoiceLimitError(f"all {MAX_VOICES} voices are busy: stop one or "
                                          "wait for one to finish")
                cmd = self._cmd
                if kind in (_lib.SC_VOICE_BUFFER, _lib.SC_VOICE_RECORD):
                    # The cdata keeps the array's buffer exported (and the array alive)
                    # until the pin is dropped, after the mixer handed the voice back.
                    data = _ffi.from_buffer(source,
                                            require_writable=kind == _lib.SC_VOICE_RECORD)
                    pin: tuple[object, Ring | None, Any] = ((data, source), None, None)
                    cmd.data, cmd.ring, cmd.frames = (_ffi.cast("const float *", data),
                                                      _ffi.NULL, source.shape[0])
                else:
                    # RingClosedError here if the ring was closed meanwhile; from now on
                    # the keepalive keeps the C handle valid whatever the ring's owner does.
                    handle, keepalive = source.native_handle()
                    reader = handle if monitor is None else None  # a monitor's writer is us
                    pin = (keepalive, source if owned else None, reader)
                    cmd.data, cmd.ring, cmd.frames = _ffi.NULL, handle, 0
                    if reader is not None:  # this process reads it: its writer sees we live
                        _lib.sc_ring_claim(reader, _lib.SC_RING_READER)
                slot = self._free[0]
                generation = (self._generations[slot] + 1) & 0xFFFFFFFF
                cmd.op = _lib.SC_CMD_ADD
                cmd.slot, cmd.generation, cmd.kind = slot, generation, kind
                cmd.channels, cmd.loop = channels, int(bool(loop))
                cmd.start_frame, cmd.fade_frames = start, fade
                cmd.gain, cmd.pan = gain, pan
                cmd.monitor = int(monitor is not None)
                cmd.late = _LATE[late]
                for c, channel in enumerate(monitor or ()):
                    cmd.input_map[c] = channel
                cmd.mapped = int(output_map is not None)
                for c, channel in enumerate(output_map or ()):
                    cmd.output_map[c] = channel
                if cls is None:
                    cls = StreamVoice if kind == _lib.SC_VOICE_STREAM else Voice
                voice = cls(self, slot, generation, source, channels, gain, pan)
                voice.start_frame = None if start < 0 else start
                voice.channel_map = output_map
                # Pinned before the command can reach the mixer, unpinned at the hand-back.
                self._pins[slot] = pin
                try:
                    self.send(cmd)
                except BaseException:
                    del self._pins[slot]  # not queued: the mixer never saw it
                    if pin[2] is not None:
                        _lib.sc_ring_leave(pin[2], _lib.SC_RING_READER)
                    raise
                self._free.popleft()
                self._generations[slot] = generation
                self._voices[slot] = voice
                return voice
        except BaseException:
            if owned:
                source.close()  # the engine's own new ring: nobody else will close it
            raise

    def set_gain_pan(self, voice: Voice, gain: Any, pan: Any,
                     at: Any = None) -> tuple[float, float]:
        """Queue new gain and pan for ``voice`` (ramped over one period by the mixer).

        Parameters
        ----------
        voice : Voice
            A voice of this table.
        gain : float
            Linear gain, -64 .. 64.
        pan : float
            -1 .. 1.
        at : int or None
            An output frame still to render: the new values apply from exactly that frame
            (a step, no ramp).  None: from the next period, ramped over it.

        Returns
        -------
        tuple of (float, float)
            The checked values (kept by the voice even once it is done).

        Raises
        ------
        TypeError, ValueError
            A bad ``gain`` or ``pan``.
        EngineClosedError
            The engine is closed.
        CommandQueueFullError
            The mixer took no command for 1 s.

        Notes
        -----
        Any thread; nothing is queued for a voice already done.
        """
        gain, pan = self.check_gain_pan(gain, pan)
        if pan != 0.0 and voice.channel_map is not None:
            raise ValueError("pan must be 0 for a voice with a channel map: the map places "
                             "each channel")
        frame = -1 if at is None else positive_int("at", at, 0, 2**62)
        self._send_to(voice, _lib.SC_CMD_SET, gain=gain, pan=pan, start_frame=frame)
        return gain, pan

    def _send_to(self, voice: Voice, op: int, **fields: Any) -> None:
        """Queue command ``op`` for ``voice`` with ``fields``, unless the voice is done."""
        with self._lock:
            self._check_open()
            if voice._done.is_set():
                return
            cmd = self._cmd
            cmd.op, cmd.slot, cmd.generation = op, voice._slot, voice._generation
            for name, value in fields.items():
                setattr(cmd, name, value)
            self.send(cmd)

    def stop_voice(self, voice: Voice, fade: Any, at: Any = None) -> None:
        """Queue the STOP command for ``voice`` (faded over ``fade`` seconds).

        Parameters
        ----------
        voice : Voice
            A voice of this table.
        fade : float
            Seconds, 0 .. 3600.
        at : int or None
            The output frame the fade (or the end) starts at; None: the next period.

        Raises
        ------
        TypeError, ValueError
            A bad ``fade``.
        EngineClosedError
            The engine is closed.
        CommandQueueFullError
            The mixer took no command for 1 s.

        Notes
        -----
        Any thread; nothing is queued for a voice already done.
        """
        frame = -1 if at is None else positive_int("at", at, 0, 2**62)
        self._send_to(voice, _lib.SC_CMD_STOP, fade_frames=self.fade_frames("fade", fade),
                      start_frame=frame)

    def end_voice(self, voice: Voice, cause: str, fade: float = 0.005) -> bool:
        """Stop ``voice`` for a reason of the engine's own: it ends with ``cause`` as its
        :attr:`~Voice.end_reason` (instead of 'stopped') after a ``fade``-second fade.

        Parameters
        ----------
        voice : Voice
            A voice of this table.
        cause : str
            The end reason to give it (e.g. 'producer_died').
        fade : float
            Seconds of the fade-out.

        Returns
        -------
        bool
            False when the voice was already done (or the engine closed): nothing queued.

        Notes
        -----
        Any thread.
        """
        with self._lock:
            if self._closed or voice._done.is_set():
                return False
            self._end_causes[voice._slot] = cause
            try:
                self.stop_voice(voice, fade)
            except BaseException:
                self._end_causes.pop(voice._slot, None)
                raise
            return True

    def finish_voice(self, voice: Voice) -> None:
        """Queue the FINISH command for a stream voice: it plays what its ring holds, then
        ends as 'finished'.

        Parameters
        ----------
        voice : Voice
            A stream voice of this table.

        Raises
        ------
        EngineClosedError
            The engine is closed.
        CommandQueueFullError
            The mixer took no command for 1 s.

        Notes
        -----
        Any thread; nothing is queued for a voice already done.
        """
        self._send_to(voice, _lib.SC_CMD_FINISH)

    def voice_stats(self, voice: Voice) -> dict[str, int]:
        """Live counters of ``voice`` (its final ones once it is done).

        Parameters
        ----------
        voice : Voice
            A voice of this table.

        Returns
        -------
        dict of str to int
            ``frames_played``, ``underruns``, ``underrun_frames`` and ``nans``.

        Raises
        ------
        EngineClosedError
            The engine is closed.
        NativeError
            The engine refused the read.

        Notes
        -----
        Any thread.
        """
        with self._lock:
            self._check_open()
            if voice._done.is_set():
                return voice._final_stats()
            s = _ffi.new("sc_voice_stats *")
            check(_lib.sc_engine_voice_stats(self._handle, voice._slot, s), "voice stats")
            if voice.start_frame is None and s.generation == voice._generation:
                voice.start_frame = int(s.start_frame)
            return {"frames_played": s.frames_played, "underruns": s.underruns,
                    "underrun_frames": s.underrun_frames, "nans": s.nonfinite}

    def underruns_per_voice(self) -> dict[int, int]:
        """``{voice.id: underruns}`` of the stream voices still in the table.

        Returns
        -------
        dict of int to int
            Live counts, read without stopping the mixer.

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
            out = {}
            s = _ffi.new("sc_voice_stats *")
            for slot, voice in self._voices.items():
                if isinstance(voice, StreamVoice):
                    _lib.sc_engine_voice_stats(self._handle, slot, s)
                    out[voice.id] = s.underruns
            return out

    # ---- the hand-back ------------------------------------------------------------------------

    def reap(self) -> int:
        """Release the voices the mixer handed back: unpin, free the slot, finish the voice.

        Returns
        -------
        int
            How many voices were released (0 once the engine is closed: :meth:`close`
            released them all).

        Notes
        -----
        Any thread.  A ring the engine made for a stream voice is closed here.
        """
        n = 0
        with self._lock:
            if self._closed:
                return 0
            ret = self._ret
            while _lib.sc_engine_poll_return(self._handle, ret):
                voice = self._voices.get(ret.slot)
                if voice is None or voice._generation != ret.generation:
                    continue  # not ours (cannot happen: every ADD is recorded)
                voice.start_frame = int(ret.start_frame)
                self._release(ret.slot, _END_REASONS.get(ret.reason, "?"), ret.frames_played,
                              ret.underruns, ret.underrun_frames, ret.nonfinite)
                n += 1
        return n

    def _release(self, slot: int, reason: str, frames_played: int, underruns: int,
                 underrun_frames: int, nans: int) -> None:
        """The slot is Python's again (caller holds the lock).  A voice flushed because the
        sink failed (:attr:`failure` set) ends as ``'failed'``, with the sink's reason."""
        voice = self._voices.pop(slot)
        _keepalive, owned_ring, reader = self._pins.pop(slot)
        self._free.append(slot)
        if reader is not None:  # the engine stops reading: the writer (another process?) learns it
            _lib.sc_ring_leave(reader, _lib.SC_RING_READER)
        cause = self._end_causes.pop(slot, None)
        if cause is not None and reason == "stopped":
            reason = cause
        if reason == "flushed" and self.failure is not None:
            voice._finish("failed", frames_played, underruns, underrun_frames, nans,
                          self.failure)
        else:
            voice._finish(reason, frames_played, underruns, underrun_frames, nans)
        if owned_ring is not None:
            owned_ring.close()  # fd, mappings and locked pages go with the last reference
        # _keepalive goes out of scope here: the array or the ring's memory is released

    def close(self) -> None:
        """After the native engine was freed: finish every voice left, drop every pin.

        Notes
        -----
        Called by the engine under its lock, once no C thread can read a voice any more.
        Voices not handed back end as ``'flushed'`` with the counts they had last.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._handle = _ffi.NULL
            if self._watch_stop is not None:  # the watcher leaves on its own (no join: it
                os.eventfd_write(self._watch_stop, 1)  # may wait for this lock right now)
                self._watcher = self._watch_stop = None
            for slot in list(self._voices):
                v = self._voices[slot]
                self._release(slot, "flushed", v.frames_played, v.underruns,
                              v.underrun_frames, v.nans)

    def _disown(self, lock: Any) -> None:
        """After fork, in the child: closed, with a fresh lock; no mixer runs here, so every
        voice is done for the child (its rings and arrays are the parent's business)."""
        self._lock = lock
        self._closed = True
        self._handle = _ffi.NULL
        # The watcher thread is the parent's (no thread survives fork); its descriptors were
        # inherited: they stay open here until exec (close-on-exec), harmless.
        self._watcher = self._watch_stop = None
        for voice in self._voices.values():
            voice._finish("flushed", voice.frames_played, voice.underruns,
                          voice.underrun_frames, voice.nans)
        self._voices.clear()
        self._pins.clear()


class MixerProgress:
    """asyncio: wait for the mixer's next cycles on the event loop's own thread.

    Parameters
    ----------
    table : VoiceTable
        The engine's table (its progress eventfd and waiter count).

    Notes
    -----
    Use as ``with MixerProgress(table) as progress: ... await progress.next(timeout)``, in a
    coroutine.  While inside, the mixer writes the engine's progress eventfd once per cycle
    (it does so only while a waiter is counted) and the loop watches a duplicate of it
    (``add_reader``): no thread, no polling.
    """

    def __init__(self, table: VoiceTable) -> None:
        self._table = table
        self._fd = -1
        self._woken = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> MixerProgress:
        self._loop = asyncio.get_running_loop()
        self._fd = os.dup(self._table.progress_fd())
        self._table.watch_progress(1)
        self._loop.add_reader(self._fd, self._readable)
        return self

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._fd)
        self._woken.set()

    async def next(self, timeout: float | None) -> None:
        """Return after the mixer's next cycle (or ``timeout`` seconds; None: no limit)."""
        self._woken.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.remove_reader(self._fd)
        self._table.watch_progress(-1)
        os.close(self._fd)


_voice_ids = itertools.count(1)  # next() is atomic under the GIL


class Voice:
    """A voice playing a float32 buffer in place.  See the module docstring for the pan law.

    Parameters
    ----------
    table : VoiceTable
        The engine's voice table, which sends this voice's commands.
    slot : int
        The mixer's voice slot (0 .. ``MAX_VOICES`` - 1).
    generation : int
        The slot's generation, so a command never reaches a later voice in the same slot.
    source : numpy.ndarray or Ring
        What the mixer reads: the array or the ring (the table pins it until :attr:`done`).
    channels : int
        The voice's channels: 1 or the engine's.
    gain : float
        Linear gain at the start.
    pan : float
        -1 (left) .. +1 (right) at the start.

    Notes
    -----
    Made by :meth:`Engine.play <streamcore.Engine.play>`, never by hand.  Any Python thread
    may use a voice (the table serialises its commands); the realtime mixer thread applies
    them at the start of its next period.  Once :attr:`done`, ``end_reason`` is
    ``'finished'``, ``'stopped'``, ``'flushed'`` (the engine stopped) or ``'failed'`` (the
    sink failed for good: ``error`` says why, and :meth:`wait` raises) and
    ``frames_played``, ``underruns`` and ``nans`` hold the final counts.  After the engine
    is closed, :meth:`stop`, :meth:`stats` and setting ``gain`` or ``pan`` raise
    :class:`~streamcore.errors.EngineClosedError`.
    """

    def __init__(self, table: VoiceTable, slot: int, generation: int, source: Any,
                 channels: int, gain: float, pan: float) -> None:
        self.id = next(_voice_ids)    #: unique per process (keys stats().underruns_per_voice)
        self._table = table
        self._slot = slot
        self._generation = generation
        self._source = source         # what the mixer reads (the table holds the real pin)
        self.channels = channels
        #: the output channel of each of its channels (``channels=[...]``), or None
        self.channel_map: list[int] | None = None
        self._gain = gain
        self._pan = pan
        self._done = threading.Event()
        self._callbacks: list[Callable[[], None]] = []  # run once at the end (_on_end)
        self._callbacks_lock = threading.Lock()
        #: once done: "finished", "stopped", "flushed" (the engine stopped), "failed" (its
        #: sink failed for good: :attr:`error` says why), "late" (a refused late start) or
        #: "producer_died" (a stream voice whose writing process died without closing its
        #: ring)
        self.end_reason: str | None = None
        self.error: str | None = None  #: the sink's failure when end_reason is "failed"
        self.frames_played = 0        #: final count, once done
        self.underruns = 0            #: final count, once done
        self.underrun_frames = 0      #: final count, once done
        self.nans = 0                 #: blocks silenced for NaN/Inf, once done
        #: The frame it starts (started) at: ``at``, or once the mixer took it (seen by
        #: :meth:`stats` or at its end) the next period's; None until then.  An input
        #: frame for a :class:`~streamcore.capture.Recording`.
        self.start_frame: int | None = None

    def __repr__(self) -> str:
        state = self.end_reason or "playing"
        return f"<{type(self).__name__} {self.id} {state} gain={self._gain} pan={self._pan}>"

    @property
    def gain(self) -> float:
        """The voice's gain (linear, -64 .. 64); setting it ramps over one period.

        Raises
        ------
        TypeError
            On setting: not a number.
        ValueError
            On setting: not finite or outside -64 .. 64.
        EngineClosedError
            On setting: the engine is closed.
        CommandQueueFullError
            On setting: the mixer took no command for 1 s.

        Notes
        -----
        Any thread.  Setting it on a voice that is done changes only the value read back.
        """
        return self._gain

    @gain.setter
    def gain(self, value: float) -> None:
        self._gain, _pan = self._table.set_gain_pan(self, value, self._pan)

    @property
    def pan(self) -> float:
        """The voice's pan, -1 (left) .. +1 (right); setting it ramps over one period.

        Raises
        ------
        TypeError
            On setting: not a number.
        ValueError
            On setting: not finite, outside -1 .. 1, or not 0 on an engine that is not
            stereo.
        EngineClosedError
            On setting: the engine is closed.
        CommandQueueFullError
            On setting: the mixer took no command for 1 s.

        Notes
        -----
        Any thread.  The pan law is in the module docstring.
        """
        return self._pan

    @pan.setter
    def pan(self, value: float) -> None:
        _gain, self._pan = self._table.set_gain_pan(self, self._gain, value)

    @property
    def done(self) -> bool:
        """True once the mixer handed the voice back (it no longer reads its source).

        Notes
        -----
        Any thread; asking reaps the voices the mixer returned.  True after the engine
        closed.  Pairs with :meth:`wait`.
        """
        if not self._done.is_set():
            self._table.reap()
        return self._done.is_set()

    def set(self, gain: float | None = None, pan: float | None = None,
            at: int | None = None) -> None:
        """Change gain and/or pan, from an exact output frame when ``at`` is given.

        Parameters
        ----------
        gain : float or None
            Linear gain, -64 .. 64; None: unchanged.
        pan : float or None
            -1 .. 1; None: unchanged.
        at : int or None
            An output frame (``Engine.frame``'s clock) still to render: every frame before it
            plays with the old values, every frame from it with the new ones (a step, no
            ramp).  None, or a frame already rendered: from the next period, ramped over it
            (as setting :attr:`gain`).

        Raises
        ------
        TypeError, ValueError
            A bad ``gain``, ``pan`` or ``at``.
        EngineClosedError
            The engine is closed.
        CommandQueueFullError
            The mixer took no command for 1 s.
        """
        self._gain, self._pan = self._table.set_gain_pan(
            self, self._gain if gain is None else gain, self._pan if pan is None else pan, at)

    def stop(self, fade: float = 0.01, at: int | None = None) -> None:
        """Fade out over ``fade`` seconds (0: at once), then hand the voice back.

        Parameters
        ----------
        fade : float
            Seconds of the linear fade to silence (0 .. 3600).
        at : int or None
            The output frame (``Engine.frame``'s clock) the fade starts at, exactly: the
            voice plays every frame before it as it was.  None, or a frame already rendered:
            from the next period.

        Raises
        ------
        TypeError
            ``fade`` or ``at`` is not a number.
        ValueError
            ``fade`` is not finite or outside 0 .. 3600 s, or ``at`` is negative.
        EngineClosedError
            The engine is closed.
        CommandQueueFullError
            The mixer took no command for 1 s.

        Notes
        -----
        Idempotent while the engine is open (nothing happens once :attr:`done`).  Any
        thread; returns at once, the mixer fades from its next period (or from ``at``):
        pair with :meth:`wait`.
        """
        self._table.stop_voice(self, fade, at)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :attr:`done`; pairs with :meth:`stop`.

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most; None waits as long as it takes.

        Returns
        -------
        bool
            True when the voice is done, False on timeout.

        Raises
        ------
        TypeError
            ``timeout`` is not a number or None.
        ValueError
            ``timeout`` is NaN or negative.
        SinkError
            The voice ended because the engine's sink failed (``end_reason`` is
            ``'failed'``, :attr:`error` says why): it was not heard to its end.
        LateStartError
            Added with ``late='error'`` for a frame already rendered: it was not played.

        Notes
        -----
        Any thread but the audio path.  No polling: the mixer writes the engine's end
        eventfd when it hands a voice back and a thread of the engine (started by the first
        wait) reaps at once, which sets this voice's done event.
        """
        if timeout is not None:
            timeout = finite("timeout", timeout, 0.0)
        if not self.done:
            self._table.watch_ends()
            if not self._done.wait(timeout):
                return False
        if self.end_reason == "failed":
            self._table.failure_reported = True
            raise SinkError(f"the voice was cut short: {self.error}")
        if self.end_reason == "late":
            raise LateStartError(f"the voice's start frame {self.start_frame} had been "
                                 f"rendered when the mixer took it (late='error'): it was "
                                 f"not played")
        return True

    async def await_end(self) -> str:
        """Wait for the voice's end in an asyncio event loop: ``await voice.await_end()``.

        Returns
        -------
        str
            ``end_reason``.

        Raises
        ------
        SinkError
            The voice ended because the engine's sink failed.

        Notes
        -----
        No polling and no thread per wait: the engine's end watcher (see :meth:`wait`)
        resolves the future through the loop's own wake-up fd
        (``call_soon_threadsafe``).
        """
        if not self.done:
            loop = asyncio.get_running_loop()
            future: asyncio.Future[None] = loop.create_future()

            def ended() -> None:
                loop.call_soon_threadsafe(
                    lambda: None if future.done() else future.set_result(None))

            self._on_end(ended)
            self._table.watch_ends()
            await future
        if self.end_reason == "failed":
            self._table.failure_reported = True
            raise SinkError(f"the voice was cut short: {self.error}")
        return str(self.end_reason)

    def _on_end(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the voice is done (now, if it is)."""
        with self._callbacks_lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def stats(self) -> dict[str, int]:
        """Live counters of the voice, read while the mixer runs.

        Returns
        -------
        dict of str to int
            ``frames_played`` (frames), ``underruns`` (times a stream voice's ring ran
            short), ``underrun_frames`` (frames of silence played for them) and ``nans``
            (blocks silenced for NaN/Inf); the final counts once :attr:`done`.

        Raises
        ------
        EngineClosedError
            The engine is closed (the final counts stay in ``frames_played``,
            ``underruns``, ``underrun_frames`` and ``nans``).
        NativeError
            The engine refused the read.

        Notes
        -----
        Any thread.
        """
        return self._table.voice_stats(self)

    def _final_stats(self) -> dict[str, int]:
        return {"frames_played": self.frames_played, "underruns": self.underruns,
                "underrun_frames": self.underrun_frames, "nans": self.nans}

    def _finish(self, reason: str, frames_played: int, underruns: int, underrun_frames: int,
                nans: int, error: str | None = None) -> None:
        """Called by the table when the mixer handed the voice back (under its lock)."""
        self.error = error
        self.end_reason = reason
        self.frames_played = frames_played
        self.underruns = underruns
        self.underrun_frames = underrun_frames
        self.nans = nans
        self._source = None
        with self._callbacks_lock:
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


class StreamVoice(Voice):
    """A voice playing what is written into its ring.

    Parameters
    ----------
    *args, **kwargs
        As for :class:`Voice`; the source is the voice's :class:`~streamcore.Ring`.

    Notes
    -----
    Made by :meth:`Engine.stream <streamcore.Engine.stream>`.  The ring has a single writer:
    one thread of this process, or one other process holding the ring's fd; the realtime
    mixer thread is its reader.  On underrun the voice plays silence, counts it, and continues
    with the data that arrives next, in order.  A ring the engine made is closed when the
    voice is handed back: the writing methods then raise
    :class:`~streamcore.errors.RingClosedError`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ring: Ring = self._source

    @property
    def ring(self) -> Ring:
        """The voice's :class:`~streamcore.Ring` (float32, this voice's channels).

        Notes
        -----
        Any thread.  A ring the engine made is closed once the voice is done (its memory,
        fd and locked pages are released then); a ring given to ``Engine.stream(ring=...)``
        stays the caller's.
        """
        return self._ring

    def write_view(self, frames: int) -> _np.ndarray:
        """A writable view of up to ``frames`` free frames of the ring; then :meth:`commit`.

        Parameters
        ----------
        frames : int
            Frames wanted (>= 0).

        Returns
        -------
        numpy.ndarray
            float32, shape ``(k, channels)``, k <= ``frames``: the ring's own memory.

        Raises
        ------
        TypeError, ValueError
            ``frames`` is not a count.
        RingClosedError
            The ring is closed (an engine's ring closes when the voice is done).
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        The ring's writer thread only (see :meth:`Ring.write_view
        <streamcore.Ring.write_view>`).
        """
        return self._ring.write_view(frames)

    def commit(self, frames: int) -> None:
        """Publish ``frames`` frames written into the last :meth:`write_view` to the mixer.

        Parameters
        ----------
        frames : int
            Frames to publish, at most what :meth:`write_view` returned.

        Raises
        ------
        TypeError, ValueError
            ``frames`` is not a count, or is more than was handed out.
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        The ring's writer thread only.
        """
        self._ring.commit(frames)

    def write(self, array: Any, timeout: float | None = None) -> int:
        """Queue all of ``array`` in the ring, waiting for room as the mixer plays.

        Parameters
        ----------
        array : numpy.ndarray
            float32 frames, shape ``(m, channels)`` (or ``(m,)`` for a mono voice).
        timeout : float or None
            Seconds to wait for room at most; None: as long as it takes; 0: no wait (what
            fits now).

        Returns
        -------
        int
            Frames queued: ``m``, or fewer after the timeout, or when the voice ended or
            its engine is not running (nothing would make room: see :attr:`done`).

        Raises
        ------
        TypeError
            Not a numpy array, or not float32, or a bad ``timeout``.
        ValueError
            The wrong shape, or ``timeout`` < 0.
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        The ring's writer thread only.  The wait releases the GIL and is woken by the
        mixer's next read of the ring (within a period of the room appearing), never by
        polling; the mixer makes that wake-up (one syscall) only while a writer waits.
        """
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + finite("timeout", timeout, 0.0)
        try:
            done = self._ring._write(array, False)  # the voice's end is looked at below
        except (TypeError, ValueError) as e:
            if isinstance(e, StreamcoreError):  # the ring's own errors (closed) stay as they are
                raise
            raise type(e)(f"array: {e}") from None
        total = int(array.shape[0])
        ring = self._ring
        while done < total:
            wakes = ring._wakes()  # before the checks: a voice that ends after them wakes us
            may, left = self._room_may_come(deadline)
            if not may:
                break
            ring._wait(_lib.sc_ring_wait_writable, min(total - done, ring.capacity), left,
                       "write", since=wakes, check_peer=False)
            more = self._write_more(array[done:])
            if more is None:
                break
            done += more
        return done

    def _write_more(self, array: Any) -> int | None:
        """After a wait: write what fits now; None when the voice ended meanwhile (the engine
        may have closed its own ring already)."""
        try:
            return self._ring._write(array, False)
        except RingClosedError:
            self._table.reap()
            if self.done:
                return None
            raise

    def _room_may_come(self, deadline: float | None) -> tuple[bool, float | None]:
        """For the writes' waits: whether waiting for room can still help (the voice plays
        on, the mixer runs, time is left) and the seconds left (None: no limit)."""
        self._table.reap()  # a voice the mixer handed back is done now
        if self.done or not self._table.mixing() or self._table.ended(self):
            return False, None
        left = None if deadline is None else deadline - time.monotonic()
        return left is None or left > 0, left

    async def awrite(self, array: Any, timeout: float | None = None) -> int:
        """:meth:`write` for asyncio: ``await voice.awrite(array)`` queues all of it.

        Parameters
        ----------
        array : numpy.ndarray
            float32 frames, shape ``(m, channels)`` (or ``(m,)`` for a mono voice).
        timeout : float or None
            Seconds to wait for room at most; None: as long as it takes.

        Returns
        -------
        int
            Frames queued, as :meth:`write` counts them.

        Raises
        ------
        TypeError, ValueError
            As :meth:`write`.
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        The event loop's own thread: no thread of ours, no polling.  While it waits, the
        mixer writes the engine's progress eventfd once per cycle and the loop watches a
        duplicate of that fd (``add_reader``); each wake-up queues what fits.
        """
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + finite("timeout", timeout, 0.0)
        done = self.write(array, timeout=0)
        total = int(array.shape[0])
        if done >= total:
            return done
        with MixerProgress(self._table) as progress:
            while done < total:
                may, left = self._room_may_come(deadline)
                if not may:
                    break
                await progress.next(left)
                more = self._write_more(array[done:])
                if more is None:
                    break
                done += more
        return done

    def finish(self) -> None:
        """Play what the ring holds, then end ('finished'): the stream's tail is never dropped.

        What is written until the mixer gets there is played too; :meth:`wait` then returns
        with :attr:`end_reason` 'finished'.

        Raises
        ------
        EngineClosedError
            The engine is closed.
        CommandQueueFullError
            The mixer took no command for 1 s.

        Notes
        -----
        Any thread; idempotent.  The end comes when the mixer finds the ring empty, so
        write everything first, then call finish(): a stream's tail is never dropped.  An
        underrun before finish() stays an underrun (the voice goes on).
        """
        self._table.finish_voice(self)

    @property
    def writable(self) -> int:
        """Frames that can be written now.

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread; the count only grows until the writer writes.
        """
        return self._ring.writable
