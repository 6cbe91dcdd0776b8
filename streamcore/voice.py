"""Voices: what the engine mixes.  Created by ``Engine.play()`` and ``Engine.stream()``.

A :class:`Voice` plays a float32 numpy array IN PLACE: the mixer reads the array's own memory,
so the array must not be resized or freed while the voice plays; the voice keeps a reference
until the mixer hands the voice back (``done``), and writing into the array meanwhile changes
what is heard.  A :class:`StreamVoice` plays what is written into its ring.

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

Concurrency: any Python thread may use a voice (the engine serialises commands); the mixer
applies commands at the start of its next period.
"""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as _np

    from streamcore.engine import Engine
    from streamcore.ring import Ring

__all__ = ["StreamVoice", "Voice", "pan_gains"]


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


class Voice:
    """A voice playing a float32 buffer in place.  See the module docstring for the pan law.

    Parameters
    ----------
    engine : Engine
        The engine that mixes the voice.
    slot : int
        The mixer's voice slot (0 .. ``MAX_VOICES`` - 1).
    generation : int
        The slot's generation, so a command never reaches a later voice in the same slot.
    source : numpy.ndarray or Ring
        What the mixer reads: the array (kept referenced until :attr:`done`) or the ring.
    channels : int
        The voice's channels: 1 or the engine's.
    gain : float
        Linear gain at the start.
    pan : float
        -1 (left) .. +1 (right) at the start.

    Notes
    -----
    Made by :meth:`Engine.play <streamcore.Engine.play>`, never by hand.  Any Python thread
    may use a voice (the engine serialises its commands); the realtime mixer thread applies
    them at the start of its next period.  Once :attr:`done`, ``end_reason`` is
    ``'finished'``, ``'stopped'`` or ``'flushed'`` and ``frames_played``, ``underruns`` and
    ``nans`` hold the final counts.
    """

    _ids = 0

    def __init__(self, engine: Engine, slot: int, generation: int, source: Any, channels: int,
                 gain: float, pan: float) -> None:
        Voice._ids += 1
        self.id = Voice._ids          #: unique per process (keys stats().underruns_per_voice)
        self._engine = engine
        self._slot = slot
        self._generation = generation
        self._source = source         # kept alive: the mixer reads its memory until done
        self.channels = channels
        self._gain = gain
        self._pan = pan
        self._done = threading.Event()
        self.end_reason: str | None = None  #: "finished", "stopped" or "flushed" once done
        self.frames_played = 0        #: final count, once done
        self.underruns = 0            #: final count, once done
        self.nans = 0                 #: blocks silenced for NaN/Inf, once done

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
        CommandQueueFullError
            On setting: the mixer took no command for 1 s.

        Notes
        -----
        Any thread.  Setting it on a voice that is done changes only the value read back.
        """
        return self._gain

    @gain.setter
    def gain(self, value: float) -> None:
        self._engine._set_gain_pan(self, value, self._pan)
        self._gain = float(value)

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
        CommandQueueFullError
            On setting: the mixer took no command for 1 s.

        Notes
        -----
        Any thread.  The pan law is in the module docstring.
        """
        return self._pan

    @pan.setter
    def pan(self, value: float) -> None:
        self._engine._set_gain_pan(self, self._gain, value)
        self._pan = float(value)

    @property
    def done(self) -> bool:
        """True once the mixer handed the voice back (it no longer reads its source).

        Notes
        -----
        Any thread; asking reaps the voices the mixer returned.  Pairs with :meth:`wait`.
        """
        if not self._done.is_set():
            self._engine._reap()
        return self._done.is_set()

    def stop(self, fade: float = 0.01) -> None:
        """Fade out over ``fade`` seconds (0: at the next period), then hand the voice back.

        Parameters
        ----------
        fade : float
            Seconds of the linear fade to silence (0 .. 3600).

        Raises
        ------
        TypeError
            ``fade`` is not a number.
        ValueError
            ``fade`` is not finite or outside 0 .. 3600 s.
        CommandQueueFullError
            The mixer took no command for 1 s.

        Notes
        -----
        Idempotent (nothing happens once :attr:`done`).  Any thread; returns at once, the
        mixer fades from its next period: pair with :meth:`wait`.
        """
        if self._done.is_set():
            return
        self._engine._stop_voice(self, fade)

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

        Notes
        -----
        Any thread but the audio path: it polls every 2 ms.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

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
        NativeError
            The engine refused the read.

        Notes
        -----
        Any thread.
        """
        return self._engine._voice_stats(self)

    def _finish(self, ret: Any) -> None:
        """Called by the engine with the native sc_voice_return."""
        self.end_reason = {1: "finished", 2: "stopped", 3: "flushed"}.get(ret.reason, "?")
        self.frames_played = ret.frames_played
        self.underruns = ret.underruns
        self.underrun_frames = ret.underrun_frames
        self.nans = ret.nonfinite
        self._source = None
        self._done.set()


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
    with the data that arrives next, in order.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ring: Ring = self._source  # stays usable (e.g. to inspect) after the voice is done

    @property
    def ring(self) -> Ring:
        """The voice's :class:`~streamcore.Ring` (float32, this voice's channels).

        Notes
        -----
        Stays usable after the voice is done (e.g. to inspect it); the engine closes a ring it
        made when the engine closes.
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
            ``frames`` is not a count, or the ring is closed.
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
            ``frames`` is not a count, is more than was handed out, or the ring is closed.
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        The ring's writer thread only.
        """
        self._ring.commit(frames)

    def write(self, array: Any) -> int:
        """Copy as much of ``array`` as fits into the ring and publish it.

        Parameters
        ----------
        array : numpy.ndarray
            float32 frames, shape ``(m, channels)`` (or ``(m,)`` for a mono voice).

        Returns
        -------
        int
            Frames written (fewer than ``m`` when the ring is full).

        Raises
        ------
        TypeError
            Not a numpy array, or not float32.
        ValueError
            The wrong shape, or the ring is closed.
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        The ring's writer thread only.
        """
        return self._ring.write(array)

    @property
    def writable(self) -> int:
        """Frames that can be written now.

        Notes
        -----
        Any thread; the count only grows until the writer writes.
        """
        return self._ring.writable
