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
import threading
import warnings
from typing import Any

import numpy as _np

from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.errors import InputLateError, check
from streamcore.ring import Ring
from streamcore.voice import Voice, VoiceTable, positive_int

__all__ = ["CAPTURE_FRAMES", "TAP_FRAMES", "Capture", "Recording"]

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
        done = super().wait(timeout)
        if done and self.end_reason == "late":
            raise InputLateError(
                f"input frame {self.start_frame} had gone by when the recording reached the "
                f"mixer: ask for a later frame (Engine.input_frame is the next one)")
        return done

    def __repr__(self) -> str:
        return (f"<Recording {self.frames} frames from input frame {self.start_frame}, "
                f"{self.end_reason or 'recording'}>")


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

    def __init__(self, handle: Any, table: VoiceTable, channels: int, lock_memory: bool,
                 tap_frames: int = TAP_FRAMES) -> None:
        self.channels = channels
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
        self._armed = threading.Lock()
        check(_lib.sc_engine_set_input(handle, self._native[0][0], self._native[1][0]),
              "sc_engine_set_input")

    def arm_tap(self) -> Ring:
        """The tap, written from now on."""
        _lib.sc_engine_arm_tap(self._handle, 1)
        return self.tap

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
            "tap_frames": int(native.tap_frames),
            "tap_overflows": int(native.tap_overflows),
            "tap_lost_frames": int(native.tap_lost_frames),
            "tap_readable": int(self.tap.readable),
        }

    def close(self) -> None:
        """After the native engine was freed: release the rings."""
        self._native = None  # type: ignore[assignment]
        self.ring.close()
        self.tap.close()
