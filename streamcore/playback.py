"""Playing audio the simple way: decode a file, resample it, and :func:`play` in one call.

- :func:`decode` reads WAV, FLAC or OGG (anything libsndfile reads) into a float32 array of
  shape (frames, channels), resampled with soxr when another sample rate is asked: audio is
  never played at the wrong speed.
- :func:`play` plays an array or a file on a device (or any sink) and blocks until it has been
  heard, like ``sounddevice.play`` followed by ``sounddevice.wait``; Ctrl-C fades out, then
  re-raises.
- :class:`Playback` is what :func:`play` and ``streamcore play`` share: one voice on a running
  engine, its position, and a stop with a fade.

Threads: everything here runs in the calling Python thread; the engine's C threads do the
mixing.  Decoding and resampling happen before playback starts, never in the audio path.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as _np

from streamcore.engine import Engine
from streamcore.errors import DecodeError, SinkError
from streamcore.telemetry import EngineStats

__all__ = [
    "Decoded",
    "Playback",
    "db_to_gain",
    "decode",
    "device_samplerate",
    "fit_channels",
    "play",
    "resample",
]

#: What ``--gain`` and ``gain_db`` accept (dB); the engine's gain range is ±64 linear.
GAIN_DB_RANGE = (-120.0, 24.0)


@dataclass(frozen=True)
class Decoded:
    """A decoded file: ``frames`` (float32, shape (frames, channels), C-contiguous) at
    ``samplerate`` Hz; ``file_samplerate`` is the rate stored in the file (they differ when
    :func:`decode` resampled)."""

    path: str
    frames: _np.ndarray
    samplerate: int
    file_samplerate: int
    format: str  #: e.g. 'FLAC PCM_16'

    @property
    def channels(self) -> int:
        return int(self.frames.shape[1])

    @property
    def duration(self) -> float:
        """Seconds at :attr:`samplerate`."""
        return float(self.frames.shape[0] / self.samplerate)

    @property
    def resampled(self) -> bool:
        return self.samplerate != self.file_samplerate


def db_to_gain(db: float) -> float:
    """Linear gain of ``db`` decibels (0 dB = 1.0); ValueError outside GAIN_DB_RANGE."""
    db = float(db)
    lo, hi = GAIN_DB_RANGE
    if not math.isfinite(db) or not lo <= db <= hi:
        raise ValueError(f"gain must be within {lo:g}..{hi:g} dB, not {db:g}")
    return float(10.0 ** (db / 20.0))


def resample(frames: _np.ndarray, from_rate: int, to_rate: int) -> _np.ndarray:
    """``frames`` (float32, (n, channels)) converted from ``from_rate`` to ``to_rate`` Hz with
    soxr at its 'HQ' quality (a new C-contiguous float32 array; the same array when the rates
    are equal)."""
    if from_rate == to_rate:
        return frames
    import soxr

    out = soxr.resample(frames, from_rate, to_rate, quality="HQ")
    return _np.ascontiguousarray(out, dtype=_np.float32)


def decode(path: str | os.PathLike[str], samplerate: int | None = None) -> Decoded:
    """Read the whole audio file at ``path`` as float32 frames, resampled when asked.

    Parameters
    ----------
    path : str or os.PathLike
        A WAV, FLAC or OGG file (anything libsndfile reads).
    samplerate : int or None
        Hz to resample to (with soxr, 'HQ') when it differs from the file's; None: the
        file's own rate.

    Returns
    -------
    Decoded
        ``frames`` (float32, shape (frames, channels), C-contiguous), ``samplerate`` (Hz),
        ``file_samplerate`` and ``format``.

    Raises
    ------
    TypeError
        ``path`` is not a path, or ``samplerate`` not an int.
    ValueError
        ``samplerate`` is outside 8000 .. 384000 Hz.
    FileNotFoundError
        No such file.
    IsADirectoryError
        ``path`` is a directory.
    PermissionError
        The file is not readable.
    DecodeError
        libsndfile cannot read it, or it holds no frames (a ValueError).

    Notes
    -----
    Runs in the calling thread and reads the whole file into memory: decode before playing,
    never from the audio path.
    """
    import soundfile

    if not isinstance(path, str | bytes | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    if samplerate is not None:
        samplerate = _samplerate("samplerate", samplerate)
    name = os.fspath(path)
    if not os.path.exists(name):
        raise FileNotFoundError(f"no such file: {name}")
    if os.path.isdir(name):
        raise IsADirectoryError(f"{name} is a directory, not an audio file")
    if not os.access(name, os.R_OK):
        raise PermissionError(f"{name} is not readable")
    try:
        with soundfile.SoundFile(name) as f:
            fmt = f"{f.format} {f.subtype}"
            rate = int(f.samplerate)
            data = f.read(dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as e:
        detail = str(e).split(": ", 1)[-1] if str(e) else type(e).__name__
        raise DecodeError(f"cannot decode {name}: {detail}") from e
    if data.shape[0] == 0:
        raise DecodeError(f"{name} holds no audio frames")
    target = rate if samplerate is None else int(samplerate)
    data = resample(_np.ascontiguousarray(data), rate, target)
    return Decoded(name, data, target, rate, fmt)


def _samplerate(name: str, value: Any) -> int:
    """A sample rate the engine can run at, or TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | _np.integer):
        raise TypeError(f"{name} must be an int (Hz), not {type(value).__name__}")
    if not 8000 <= value <= 384000:
        raise ValueError(f"{name} must be within 8000..384000 Hz, not {value}")
    return int(value)


def fit_channels(frames: _np.ndarray, channels: int) -> _np.ndarray:
    """``frames`` laid out for an engine of ``channels`` channels: unchanged when they match
    or when the source is mono on a non-stereo engine, mono copied to both sides of a stereo
    engine (full level, no pan law), stereo averaged to mono.  ValueError otherwise."""
    have = frames.shape[1]
    if have == channels:
        return frames
    if have == 1 and channels == 2:
        return _np.ascontiguousarray(_np.repeat(frames, 2, axis=1))
    if have == 1:
        return frames
    if have == 2 and channels == 1:
        return _np.ascontiguousarray(frames.mean(axis=1, keepdims=True, dtype=_np.float32))
    raise ValueError(f"cannot play {have}-channel audio on a {channels}-channel engine")


def device_samplerate(device: int | str | None, samplerate: int, channels: int) -> int:
    """``samplerate`` if the output ``device`` accepts it, else the device's default rate
    (JACK, for one, runs at its server's rate only).  Raises NoDeviceError /
    DeviceNotFoundError like :class:`~streamcore.sinks.DeviceSink`."""
    import sounddevice as sd

    from streamcore.sinks.device import resolve_output_device

    index = resolve_output_device(device, list(sd.query_devices()), list(sd.query_hostapis()),
                                  sd.default.device[1])
    try:
        sd.check_output_settings(device=index, channels=channels, dtype="float32",
                                 samplerate=samplerate)
    except sd.PortAudioError:
        return int(sd.query_devices(index)["default_samplerate"])
    return samplerate


class Playback:
    """One voice playing ``frames`` on a running ``engine``: position, waiting, fading out.

    ``gain`` is linear; ``loop`` repeats until :meth:`stop`.  Use from one Python thread.
    """

    def __init__(self, engine: Engine, frames: _np.ndarray, gain: float = 1.0,
                 loop: bool = False) -> None:
        self.engine = engine
        self.frames = frames  # the voice reads this array in place until it is done
        self.loop = loop
        self.interrupted = False
        self.voice = engine.play(frames, gain=gain, loop=loop)
        # The run ends with this voice: said now, so a pipe or file never gets a frame of
        # the silence after it (wait() then drains).
        engine.drain(timeout=0)

    @property
    def duration(self) -> float:
        """Seconds of the material (one pass when looping)."""
        return float(self.frames.shape[0] / self.engine.samplerate)

    @property
    def position(self) -> float:
        """Seconds played so far within the material (wraps when looping)."""
        played = self.voice.stats()["frames_played"]
        if self.loop:
            played %= self.frames.shape[0]
        return float(min(played, self.frames.shape[0]) / self.engine.samplerate)

    @property
    def done(self) -> bool:
        return self.voice.done

    def wait(self, progress: Callable[[Playback], None] | None = None,
             interval: float = 0.1) -> None:
        """Block until the voice is done, calling ``progress(self)`` every ``interval`` s,
        then drain the engine (``Engine.drain()``: a pipe or file gets exactly the material,
        a device plays out its buffers) and wait for a device's own latency.  A
        KeyboardInterrupt propagates (call :meth:`stop` then)."""
        next_report = time.monotonic()
        while not self.voice.done:
            if time.monotonic() >= next_report:
                if self.failed:
                    return  # the sink stopped for good: nothing more will be heard
                if progress is not None:
                    progress(self)
                next_report += interval
            time.sleep(0.002)  # a fast reader (a pipe into sox) renders ahead quickly
        if progress is not None:
            progress(self)
        self._finish()

    def _finish(self) -> None:
        """The voice is done: end the run exactly there, and let a device play it out."""
        if not self.failed:
            self.engine.drain()
        time.sleep(self.tail_latency())

    @property
    def failed(self) -> bool:
        """True when the engine's sink failed for good (reader gone, device gone, disk
        error: ``engine.sink_object.error`` says what) or the engine stopped."""
        stats = self.engine.stats()  # also refreshes the sink's error
        return bool(stats.sink.get("error")) or not stats.running

    def tail_latency(self) -> float:
        """Seconds to wait after the engine drained until a device has played its last frames
        (the device's own latency, past the output ring, at most 2 s).  0 for the other
        sinks: the pipe and file sinks have delivered everything, and the null sink has
        nobody listening."""
        sink = self.engine.sink_object
        if sink is None or sink.name != "device":
            return 0.0
        return min(float(sink.stats().get("latency", 0.0) or 0.0), 2.0)

    def stop(self, fade: float = 0.05) -> None:
        """Fade out over ``fade`` seconds and wait until the fade has been delivered."""
        self.interrupted = True
        self.voice.stop(fade=fade)
        self.voice.wait(timeout=fade + 2.0)
        self._finish()


def _as_frames(data: Any) -> _np.ndarray:
    array = _np.asarray(data)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"audio must have shape (frames,) or (frames, channels), not "
                         f"{array.shape}")
    if _np.issubdtype(array.dtype, _np.integer):
        scale = float(_np.iinfo(array.dtype).max) + 1.0
        array = array.astype(_np.float32) / _np.float32(scale)
    elif not _np.issubdtype(array.dtype, _np.floating):
        raise TypeError(f"audio must be a float or integer array, not {array.dtype}")
    return _np.ascontiguousarray(array, dtype=_np.float32)


def play(data: Any, samplerate: int | None = None, *, sink: Any = "device",
         gain_db: float = 0.0, loop: bool = False, blocksize: int = 512, periods: int = 3,
         realtime: bool = True) -> EngineStats:
    """Play an array or an audio file and return when it has been heard (blocking).

    Parameters
    ----------
    data : numpy array or path
        An array of shape (frames,) or (frames, channels), float (full scale ±1.0) or integer
        (full scale of its type), or the path of a WAV, FLAC or OGG file.
    samplerate : int, optional
        Hz.  Required for an array.  For a file: the rate to play at (the file is resampled
        with soxr when it differs); default the file's own rate.
    sink : 'device', 'null', a device index or name, or a :class:`~streamcore.sinks.Sink`
        Where it is played.  'device' is the default output device; with none at all this
        raises :class:`~streamcore.errors.NoDeviceError` (use 'null' or a FileSink then).
        A device that refuses the rate gets the material resampled to its own rate.
    gain_db : float
        Gain in dB (-120..+24).
    loop : bool
        Repeat until Ctrl-C (KeyboardInterrupt).
    blocksize, periods : int
        Frames per period and periods in the output ring (latency = their product).
    realtime : bool
        Ask realtime scheduling for the mixer (refused: plays anyway, RT_DENIED taint).

    Returns
    -------
    EngineStats
        The run's figures (xruns, wake-up latency, taints...), read after playback.

    Raises
    ------
    ValueError
        An array without ``samplerate``, a bad shape, or ``gain_db`` out of range.
    TypeError
        An array that is neither float nor integer.
    FileNotFoundError, DecodeError
        The file is missing or cannot be decoded.
    NoDeviceError, DeviceNotFoundError, DeviceSettingsError
        No device, no such device, or the device refused the stream.
    SinkError
        The sink failed while playing (device or audio server gone, disk error).

    Notes
    -----
    Blocks the calling Python thread until the material has been heard; the engine's C
    threads do the mixing.  Ctrl-C fades out over 50 ms, closes the engine and re-raises
    KeyboardInterrupt.
    """
    gain = db_to_gain(gain_db)
    if isinstance(data, str | os.PathLike):
        decoded = decode(data, samplerate)
        frames, rate = decoded.frames, decoded.samplerate
    else:
        if samplerate is None:
            raise ValueError("give samplerate= (Hz) when playing an array")
        frames, rate = _as_frames(data), int(samplerate)
    channels = 2 if frames.shape[1] <= 2 else frames.shape[1]  # mono goes to both sides
    engine_sink = sink
    if isinstance(sink, int) or (isinstance(sink, str) and sink not in ("null", "device")):
        from streamcore.sinks.device import DeviceSink

        engine_sink = DeviceSink(sink)
    if engine_sink == "device" or type(engine_sink).__name__ == "DeviceSink":
        device = None if engine_sink == "device" else engine_sink.device
        device_rate = device_samplerate(device, rate, channels)
        frames, rate = resample(frames, rate, device_rate), device_rate
    frames = fit_channels(frames, channels)
    with Engine(samplerate=rate, blocksize=blocksize, periods=periods, channels=channels,
                sink=engine_sink, realtime=realtime) as engine:
        playback = Playback(engine, frames, gain=gain, loop=loop)
        try:
            playback.wait()
        except KeyboardInterrupt:
            playback.stop()
            raise
        stats = engine.stats()
        if stats.sink.get("error"):
            raise SinkError(stats.sink["error"])
        return stats
