"""Capture: the engine's input side, for ``Engine(input_channels=N)`` on a device.

The device callback (C) writes every captured frame into the *capture ring*, which the mixer
reads at the start of each cycle (native/capture.c) and hands on, in C:

- to every :class:`Recording` (``Engine.record()``): the frames of its span, copied into its
  own locked buffer at their place, so a recording is exact to the sample;
- to the *tap*, ``Engine.input``: a :class:`~streamcore.Ring` the application reads (a Python
  thread, or another process through its fd), written only once ``Engine.input`` has been
  asked for.  A reader that falls behind loses frames: counted (``tap_overflows``,
  ``tap_lost_frames``, the XRUN taint), and zeros take their place, so the tap's frames never
  lose their input frame.

One frame clock per direction: ``Engine.frame`` (output frames rendered) and
``Engine.input_frame`` (input frames handed on).  Capture index k is input frame k: frames
the capture lost (the mixer stalled for longer than the capture ring holds) are counted and
written as zeros, never skipped.  The device sink logs, per callback, the first output and
input frame and PortAudio's ADC/DAC times (``DeviceSink.timestamps()``), which relates the
two clocks.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import stat
import time
import warnings
from typing import Any

import numpy as _np

from streamcore import wav as _wav
from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.errors import InputLateError, LateStartError, SinkError, check
from streamcore.ring import Ring
from streamcore.voice import Voice, VoiceTable, finite, positive_int

__all__ = ["CAPTURE_FRAMES", "TAP_FRAMES", "Capture", "InputWriter", "Recording"]

#: Frames the capture ring holds: 4 of JACK's largest periods.  The mixer empties it every
#: cycle; it overflows only when the mixer stalls for longer (0.68 s at 48 kHz).
CAPTURE_FRAMES = 4 * 8192
#: Frames the tap (``Engine.input``) holds by default: its reader may lag this much.
TAP_FRAMES = 1 << 16
#: The longest recording: 2**31 frames (12 h at 48 kHz), and at most 4 GiB of samples.
MAX_RECORD_FRAMES = 1 << 31
_MAX_RECORD_BYTES = 1 << 32


def _locked_buffer(frames: int, channels: int) -> _np.ndarray:
    """A zeroed float32 (frames, channels) array in its own anonymous mapping, written once
    (so the mixer never faults a page of it in) and mlocked where the limit allows (an
    unlocked buffer only risks being paged out under memory pressure)."""
    nbytes = frames * channels * 4
    if nbytes > _MAX_RECORD_BYTES:
        raise ValueError(f"a recording of {frames} frames x {channels} channels is larger "
                         f"than {_MAX_RECORD_BYTES} bytes")
    area = mmap.mmap(-1, max(nbytes, 1))
    array = _np.frombuffer(area, dtype=_np.float32, count=frames * channels)
    array = array.reshape(frames, channels)
    array.fill(0.0)  # prefault every page now, not in the mixer
    address = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mlock(ctypes.c_void_p(address), ctypes.c_size_t(nbytes))  # best effort
    return array


class Recording(Voice):
    """A recording: input frames from :attr:`start_frame` on, captured in C into :attr:`data`.

    Parameters
    ----------
    *args, **kwargs
        As for :class:`~streamcore.Voice`; the source is the recording's buffer.

    Notes
    -----
    Made by :meth:`Engine.record <streamcore.Engine.record>`.  The mixer copies each frame of
    the span into :attr:`data` at its place as it is captured; :meth:`wait` returns once
    the last one is in (``end_reason`` 'finished').
    ``overflows`` counts the cycles of the span in which the capture had lost frames (the
    mixer stalled longer than the capture ring holds): those frames are zeros.  ``stop()``
    ends it early ('stopped': :attr:`data` holds the frames captured so far, the rest zeros).
    A recording whose first frame had gone by before the mixer saw it ends as 'late':
    :meth:`wait` raises :class:`~streamcore.errors.InputLateError`.  The engine stopping
    ends it as 'flushed' ('failed' when the sink failed: :meth:`wait` raises
    :class:`~streamcore.errors.SinkError`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._data: _np.ndarray = self._source

    @property
    def data(self) -> _np.ndarray:
        """The recorded frames: float32, shape ``(frames, input_channels)``.

        Complete once :meth:`wait` returned True (until then the mixer is writing it).
        """
        return self._data

    @property
    def frames(self) -> int:
        """The frames asked for."""
        return int(self._data.shape[0])

    @property
    def overflows(self) -> int:
        """Cycles of the span that found frames lost by the capture (final once done)."""
        return self.underruns

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every frame is in (or the recording ended otherwise).

        Parameters
        ----------
        timeout : float or None
            Seconds to wait at most; None waits as long as it takes.

        Returns
        -------
        bool
            True when done, False on timeout.

        Raises
        ------
        InputLateError
            The span began before the oldest frame the mixer still had to hand on.
        SinkError
            The device failed during the recording.
        TypeError, ValueError
            ``timeout`` is not a number >= 0 or None.
        """
        try:
            return super().wait(timeout)
        except LateStartError:
            raise InputLateError(
                f"input frame {self.start_frame} had gone by when the recording reached the "
                f"mixer: ask for a later frame (Engine.input_frame is the next one)") from None

    def __repr__(self) -> str:
        return (f"<Recording {self.frames} frames from input frame {self.start_frame}, "
                f"{self.end_reason or 'recording'}>")


_WRITE_FORMATS = {"wav": None, "f32le": "float32", "s16le": "int16"}
_NATIVE_FORMATS = {"float32": _lib.SC_FORMAT_F32, "int16": _lib.SC_FORMAT_S16}


class InputWriter:
    """The engine's input written to a file, a pipe or a socket by a C thread.

    Parameters
    ----------
    capture : Capture
        The engine's capture (its tap is read by the writer only).
    fd : int
        Where to write (kept open by the caller until :meth:`close`).
    frames : int
        Exactly this many frames, then done; 0: until stopped.
    format : str
        'wav' (a header, then ``dtype`` samples), 'f32le' or 's16le' (raw).
    dtype : str
        'float32' or 'int16', for 'wav'.
    owns_fd : bool
        Close ``fd`` in :meth:`close` (a file the engine opened by its path).

    Notes
    -----
    Made by :meth:`Engine.record_to <streamcore.Engine.record_to>`.  No Python runs in the
    data path: the mixer writes the tap, the C thread writes the fd.  The first frame
    written is input frame :attr:`first_frame` (known once the mixer wrote it).
    """

    def __init__(self, capture: Capture, fd: int, frames: int, format: str, dtype: str,
                 owns_fd: bool = False) -> None:
        self._capture = capture
        self.fd = fd
        self._owns_fd = owns_fd
        self.frames = frames
        self.format = format
        self.dtype = _WRITE_FORMATS[format] or dtype
        self.error: str | None = None  #: why it ended early, or None
        self.first_frame: int | None = None  #: the input frame of the first frame written
        self._final: dict[str, Any] | None = None
        self._closed = False
        self._native: Any = _ffi.NULL
        self._header_at = (os.lseek(fd, 0, os.SEEK_CUR)
                           if format == "wav" and stat.S_ISREG(os.fstat(fd).st_mode) else None)
        self._tap_start = capture.start_tap()  # ValueError when the tap has its reader
        try:
            out = _ffi.new("sc_tap_writer **")
            handle, self._keepalive = capture.tap.native_handle()
            check(_lib.sc_tap_writer_create(out, handle, fd, frames,
                                            _NATIVE_FORMATS[self.dtype]),
                  "sc_tap_writer_create")
            self._native = out[0]
            if format == "wav":  # before any sample: the C thread is not started yet
                os.write(fd, _wav.header(capture.samplerate, capture.channels, self.dtype))
            check(_lib.sc_tap_writer_start(self._native), "starting the input writer")
        except BaseException:
            if self._native != _ffi.NULL:
                _lib.sc_tap_writer_destroy(self._native)
                self._native = _ffi.NULL
            capture.stop_tap()
            raise

    def stats(self) -> dict[str, Any]:
        """Frames and bytes written, whether it finished, its error.

        Returns
        -------
        dict
            ``frames``, ``bytes``, ``waits`` (times the tap was empty), ``running``,
            ``finished``, ``error`` (None or a sentence) and ``first_frame``.
        """
        if self._final is not None:
            return dict(self._final)
        s = _ffi.new("sc_tap_writer_stats *")
        _lib.sc_tap_writer_get_stats(self._native, s)
        if s.error and self.error is None:
            self.error = f"writing the input failed: {os.strerror(s.error)}"
        if self.first_frame is None:
            origin = self._capture.tap_origin()
            if origin >= 0:
                self.first_frame = origin + self._tap_start
        return {"frames": int(s.frames), "bytes": int(s.bytes), "waits": int(s.waits),
                "running": bool(s.running), "finished": bool(s.finished),
                "error": self.error, "first_frame": self.first_frame}

    def wait(self, timeout: float | None = None) -> bool:
        """Block until all ``frames`` are written (or the writer failed).

        Parameters
        ----------
        timeout : float or None
            Seconds at most; None: as long as it takes (with ``frames`` 0: until stopped).

        Returns
        -------
        bool
            True when finished, False on timeout.

        Raises
        ------
        SinkError
            The write failed (the reader went away, the disk is full).
        """
        deadline = None if timeout is None else time.monotonic() + finite(
            "timeout", timeout, 0.0)
        poller = select.poll()  # the C thread writes its done eventfd when it finished/ended
        if self._native != _ffi.NULL:
            poller.register(_lib.sc_tap_writer_done_fd(self._native), select.POLLIN)
        while True:
            stats = self.stats()
            if stats["error"]:
                raise SinkError(stats["error"])
            if stats["finished"] or (not stats["running"] and self._final is not None):
                return True
            if not stats["running"]:
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            poller.poll(None if left is None else max(1, int(left * 1000) + 1))

    def close(self) -> None:
        """Stop the writer, fix a WAV file's header, give the tap back; idempotent.

        Raises
        ------
        SinkError
            The write had failed (once).
        """
        if self._closed:
            return
        self._closed = True
        _lib.sc_tap_writer_stop(self._native)
        final = self.stats()
        _lib.sc_tap_writer_destroy(self._native)
        self._native = _ffi.NULL
        self._keepalive = None
        self._capture.stop_tap()
        if self._header_at is not None:
            problem = _wav.fix_sizes(self.fd, self._header_at,
                                     _wav.HEADER_BYTES + final["bytes"])
            if problem and self.error is None:
                self.error = problem
        final["error"], final["running"] = self.error, False
        self._final = final
        if self._owns_fd:
            os.close(self.fd)
        if self.error:
            raise SinkError(self.error)

    def __enter__(self) -> InputWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Capture:
    """The engine's capture ring, tap and recordings (the engine's lock serialises use).

    Parameters
    ----------
    handle : cdata
        The native engine (stopped).
    table : VoiceTable
        The engine's voice table (recordings are voices of kind ``SC_VOICE_RECORD``).
    channels : int
        Input channels, 1 .. ``SC_MAX_CHANNELS``.
    lock_memory : bool
        mlock both rings (a failure is returned by :attr:`locked` for the engine's taint).
    tap_frames : int
        Frames of the tap.
    """

    def __init__(self, handle: Any, table: VoiceTable, channels: int, samplerate: int,
                 lock_memory: bool, tap_frames: int = TAP_FRAMES) -> None:
        self.channels = channels
        self.samplerate = samplerate
        #: who reads the tap: None, "input" (handed out by Engine.input) or "writer"
        self.tap_reader: str | None = None
        self._handle = handle
        self._table = table
        lock = "try" if lock_memory else False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an unlocked ring is reported as a taint
            self.ring = Ring(CAPTURE_FRAMES, channels, "float32", lock=lock,
                             name="engine-capture")
            self.tap = Ring(tap_frames, channels, "float32", lock=lock, name="engine-input")
        self.locked = not lock_memory or (self.ring.locked and self.tap.locked)
        # Held until the native engine is freed: its mixer reads one and writes the other.
        self._native = (self.ring.native_handle(), self.tap.native_handle())
        # This process writes the tap (its mixer): a reader in another process can ask
        # whether we live, and learns when the engine closes (sc_ring_leave in close()).
        _lib.sc_ring_claim(self._native[1][0], _lib.SC_RING_WRITER)
        check(_lib.sc_engine_set_input(handle, self._native[0][0], self._native[1][0]),
              "sc_engine_set_input")

    def arm_tap(self) -> Ring:
        """The tap, written from now on, for the application to read (Engine.input)."""
        if self.tap_reader == "writer":
            raise ValueError("the input tap is being written by Engine.record_to(): it has "
                             "one reader; close that writer first")
        self.tap_reader = "input"
        _lib.sc_engine_arm_tap(self._handle, 1)
        return self.tap

    def start_tap(self) -> int:
        """For an :class:`InputWriter`: drop what the tap holds (frames of an earlier arming),
        arm it; returns the tap index the writer starts at."""
        if self.tap_reader is not None:
            raise ValueError(f"the input tap already has its reader "
                             f"({'Engine.input' if self.tap_reader == 'input' else 'a writer'})"
                             f": it has one")
        _lib.sc_engine_arm_tap(self._handle, 0)
        stale = self.tap.readable
        if stale:
            self.tap.release(stale)
        self.tap_reader = "writer"
        _lib.sc_engine_arm_tap(self._handle, 1)
        return int(self.tap.stats.frames_read)

    def stop_tap(self) -> None:
        """The writer is done: disarm the tap and free it for another reader."""
        _lib.sc_engine_arm_tap(self._handle, 0)
        self.tap_reader = None

    def peaks(self) -> list[float]:
        """Each input channel's largest |sample| since the last call (then reset)."""
        out = _ffi.new("float[]", self.channels)
        n = _lib.sc_engine_input_peaks(self._handle, out, self.channels)
        return [float(out[c]) for c in range(n)]

    def tap_origin(self) -> int:
        """Tap index i holds input frame i + this (-1 until the mixer wrote the first)."""
        native = _ffi.new("sc_engine_stats *")
        _lib.sc_engine_get_stats(self._handle, native)
        return int(native.tap_origin)

    @property
    def frame(self) -> int:
        """The input frame clock: the next captured frame the mixer will hand on."""
        return int(_lib.sc_engine_input_frame(self._handle))

    def record(self, frames: Any, at: Any) -> Recording:
        """Queue a recording (see :meth:`Engine.record <streamcore.Engine.record>`)."""
        frames = positive_int("frames", frames, 1, MAX_RECORD_FRAMES)
        if at is not None:
            at = positive_int("at", at, 0, 2**62)
            now = self.frame
            if at < now:
                raise InputLateError(f"input frame {at} has gone by: the next one is {now}")
        data = _locked_buffer(frames, self.channels)
        recording = self._table.add(_lib.SC_VOICE_RECORD, data, self.channels, 1.0, 0.0, at,
                                    0.0, cls=Recording)
        assert isinstance(recording, Recording)
        return recording

    def stats(self) -> dict[str, Any]:
        """The input figures: the mixer's (frames handed on, gaps, the tap's overflows)."""
        native = _ffi.new("sc_engine_stats *")
        _lib.sc_engine_get_stats(self._handle, native)
        return {
            "channels": self.channels,
            "input_frames": int(native.input_frames),
            "input_gaps": int(native.input_gaps),
            "recordings": int(native.recordings),
            "tap_armed": bool(native.tap_armed),
            "tap_origin": int(native.tap_origin),
            "tap_reader": self.tap_reader,
            "tap_frames": int(native.tap_frames),
            "tap_overflows": int(native.tap_overflows),
            "tap_lost_frames": int(native.tap_lost_frames),
            "monitor_dropped": int(native.monitor_dropped),
            "tap_readable": int(self.tap.readable),
        }

    def close(self) -> None:
        """After the native engine was freed: release the rings."""
        if self._native is not None:
            _lib.sc_ring_leave(self._native[1][0], _lib.SC_RING_WRITER)
        self._native = None  # type: ignore[assignment]
        self.ring.close()
        self.tap.close()
