"""The device sink: any PortAudio output device, fed by a stream callback written in C.

:class:`DeviceSink` opens the stream through sounddevice but hands PortAudio
``sc_device_sink_callback`` (native/device_sink.c) as the callback and an ``sc_device_sink *``
as userdata (sounddevice's ``_StreamBase`` casts a cdata function pointer to
``PaStreamCallback*``; python-rtmixer uses the same door).  No Python runs in the audio thread:
the callback copies frames from the engine's output ring, advances it and wakes the mixer.

A normal Python thread (the monitor) watches the stream: when PortAudio reports it finished
or no longer active, or the callback has not run for ``stall_timeout`` seconds (the audio
server died), the sink records :attr:`error`, stops consuming and stops the engine.

The audio server dying leaves PortAudio unusable in this process (measured with
libportaudio2 19.6 and jackd2 1.9): Pa_StopStream, Pa_AbortStream and Pa_CloseStream on the
dead stream block, and Pa_Terminate aborts the process (an assertion in pa_jack.c's Terminate,
whose own JACK client cannot be closed).  So after such a failure the sink never calls
PortAudio on that stream again: the stream object is parked (never closed), sounddevice's exit
handler is unregistered so the process can still exit normally, and :func:`portaudio_usable`
turns False.  The next device sink opened in this process loads a private copy of the
PortAudio library (:func:`_fresh_portaudio`: new static state, its own JACK client) in place
of the broken one, so a new engine plays once the server is back, without a new process.
Other sounddevice streams that were open when the server died stay unusable.

Concurrency: the engine drives open/start/stop/close from one Python thread; the callback is
the output ring's single reader from start() to stop(); the monitor only reads counters.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.errors import (
    DeviceNotFoundError,
    DeviceSettingsError,
    EngineClosedError,
    NoDeviceError,
    SinkError,
    check,
)
from streamcore.sinks.base import Sink, SinkContext

__all__ = ["DeviceSink", "latency_figures", "output_devices", "portaudio_usable",
           "resolve_output_device"]

# Streams whose audio server died: never closed (that would block), kept referenced so their
# finalizer never runs.  Non-empty means PortAudio must not be terminated in this process.
_PARKED_STREAMS: list[Any] = []


# The PortAudio library that died with its server; its streams stay parked with it.
_BROKEN_LIBRARIES: list[Any] = []


def portaudio_usable() -> bool:
    """False once an audio server died under a device sink in this process, until the next
    device sink loads a fresh copy of PortAudio (see the module docstring)."""
    return not _PARKED_STREAMS


def _portaudio_path() -> str:
    """The file of the PortAudio library this process loaded (from /proc/self/maps)."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if "libportaudio" in os.path.basename(path):
                return path
    raise SinkError("PortAudio is loaded, but its file is not in /proc/self/maps")


def _fresh_portaudio() -> None:
    """Replace sounddevice's broken PortAudio with a private copy of the same library file.

    dlopen() of the same path returns the same, broken instance; a copy under another path is
    a new instance with fresh static state.  The broken one is kept loaded (never terminated:
    that aborts) together with its parked streams."""
    import shutil
    import tempfile

    sd = _sd()
    source = _portaudio_path()
    folder = tempfile.mkdtemp(prefix="streamcore-portaudio-")
    copy = os.path.join(folder, os.path.basename(source))
    shutil.copyfile(source, copy)
    try:
        fresh = sd._ffi.dlopen(copy)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the mapping outlives the file
    _BROKEN_LIBRARIES.append(sd._lib)
    sd._lib = fresh
    sd._last_callback = None  # a Python-callback stream of the old library: not ours to stop
    sd._initialized = 0
    sd._initialize()
    import atexit

    atexit.register(sd._exit_handler)  # the fresh library terminates normally at exit
    _PARKED_STREAMS.clear()  # still referenced through _BROKEN_PARKED


# Every parked stream, kept referenced for the process's life (its finalizer would call the
# broken library).
_BROKEN_PARKED: list[Any] = []


def _park(stream: Any) -> None:
    import atexit

    sd = _sd()
    _PARKED_STREAMS.append(stream)
    _BROKEN_PARKED.append(stream)
    atexit.unregister(sd._exit_handler)  # Pa_Terminate would abort the process

def _portaudio_running() -> bool:
    """False once PortAudio was terminated in this process (sounddevice's exit handler runs
    before streamcore's engines are closed at exit): its streams are closed by then, and
    calling them again would touch freed memory."""
    return bool(_sd()._initialized)


_DTYPES = {"float32": "float32", "int16": "int16", "int32": "int32"}
_NO_DEVICE_HINT = ("use sink='null' (a timer clock, no device), sink='manual' (offline "
                   "rendering) or a pipe sink (e.g. sink='stdout' into aplay or sox), or start "
                   "an audio server (e.g. jackd -d dummy)")


def _sd() -> Any:
    import sounddevice

    return sounddevice


def output_devices(devices: list[dict[str, Any]],
                   hostapis: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """``(index, 'name (host API)')`` of every device with output channels."""
    return [(i, f"{d['name']} ({hostapis[d['hostapi']]['name']})")
            for i, d in enumerate(devices) if d["max_output_channels"] > 0]


def resolve_output_device(device: int | str | None, devices: list[dict[str, Any]],
                          hostapis: list[dict[str, Any]], default: int) -> int:
    """The index of the output device ``device`` names (pure: tested on data).

    ``None``: ``default`` (PortAudio's default output), else the first output device.
    An int: that index, which must have output channels.  A str: the one output device whose
    'name (host API)' contains it (case-insensitive); an exact name wins over substrings.
    Raises :class:`NoDeviceError` when there is no output device at all, and
    :class:`DeviceNotFoundError` (listing the output devices) when nothing matches.
    """
    outputs = output_devices(devices, hostapis)
    if not outputs:
        raise NoDeviceError("PortAudio lists no output device (no sound card and no audio "
                            "server running); " + _NO_DEVICE_HINT)
    listing = "; ".join(f"{i}: {label}" for i, label in outputs)
    if device is None:
        if 0 <= default < len(devices) and devices[default]["max_output_channels"] > 0:
            return default
        return outputs[0][0]
    if isinstance(device, bool) or not isinstance(device, int | str):
        raise TypeError(f"device must be an int, a str or None, not {type(device).__name__}")
    if isinstance(device, int):
        if any(i == device for i, _ in outputs):
            return device
        raise DeviceNotFoundError(f"no output device has index {device}; output devices: "
                                  f"{listing}")
    wanted = device.lower()
    exact = [i for i, _ in outputs if devices[i]["name"].lower() == wanted]
    if len(exact) == 1:
        return exact[0]
    matches = [i for i, label in outputs if wanted in label.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceNotFoundError(f"no output device matches {device!r}; output devices: "
                                  f"{listing}")
    raise DeviceNotFoundError(f"{device!r} matches several output devices ("
                              + ", ".join(str(i) for i in matches)
                              + f"); give an index or a longer name; output devices: {listing}")


#: A device latency above this is a wrong report, not a latency (PipeWire's ALSA plugin
#: reported 2**32 frames): it is shown as unknown.
MAX_PLAUSIBLE_LATENCY = 10.0


def latency_figures(seconds: float, samplerate: float) -> dict[str, Any]:
    """PortAudio's output latency as ``latency`` (s), ``latency_frames`` and ``latency_ms``,
    or all None with ``latency_note`` when the value cannot be true (not finite, negative,
    over :data:`MAX_PLAUSIBLE_LATENCY`)."""
    if not (0.0 <= seconds <= MAX_PLAUSIBLE_LATENCY) or not samplerate > 0:
        return {"latency": None, "latency_frames": None, "latency_ms": None,
                "latency_note": f"the host reported {seconds!r} s: not a latency, ignored"}
    return {"latency": seconds, "latency_frames": round(seconds * samplerate),
            "latency_ms": 1e3 * seconds}


def _scheduling(tid: int) -> tuple[str | None, int | None]:
    """The audio thread's policy name and RT priority, read from outside (None if gone)."""
    if not tid:
        return None, None
    try:
        policy = os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK
        priority = os.sched_getparam(tid).sched_priority
    except OSError:
        return None, None
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO",
             os.SCHED_RR: "SCHED_RR"}
    return names.get(policy, str(policy)), priority


class DeviceSink(Sink):
    """Play the engine's output on a PortAudio device (``Engine(sink=DeviceSink(...))``).

    Parameters
    ----------
    device : int, str or None
        Index, or a substring of 'name (host API)' (see :func:`resolve_output_device`);
        None: the default output.
    latency : str or float
        'low', 'high' or seconds, passed to PortAudio.
    extra_settings : object
        Host-API specific settings, as in sounddevice.
    frames_per_buffer : int or None
        Frames PortAudio is asked to call back with (>= 0).  None: the engine's blocksize;
        0: whatever the host API prefers, then give the engine enough ``periods`` to hold
        one host buffer plus a period, or the callback underruns.
    stall_timeout : float or None
        Seconds (> 0) without a callback while playing after which the device is considered
        gone; None: the larger of 0.5 s, 20 periods and 4 latencies.
    mixer_below_callback : bool
        Once the audio thread has run, if the engine's mixer is realtime at a priority not
        below it, move the mixer to one below (through
        :func:`~streamcore.realtime.acquire_realtime`; ``engine.grant`` and
        ``engine.priority`` are updated).  Otherwise every wake-up of the mixer from the
        callback preempts the callback itself (JACK's client threads run at priority 5, the
        engine's default is 10); measured with bench/device.py: callback max 1.3-7 ms and
        JACK xruns at priority 10, under 0.1-3 ms and none at 4.

    Raises
    ------
    ValueError
        ``latency``, ``stall_timeout`` or ``frames_per_buffer`` out of range.

    Notes
    -----
    The stream has the engine's samplerate, channels, dtype and blocksize; PortAudio may
    still call back with other frame counts, which the callback serves frame-exactly.  The
    callback (C, PortAudio's audio thread) is the output ring's single reader from
    :meth:`start` to :meth:`stop`; a monitor thread (normal Python) only reads counters and
    stops the engine when the device goes away.  The engine drives the life cycle from one
    Python thread.
    """

    name = "device"
    _state = _ffi.NULL   # class-level NULL: close() is safe after a failed open()
    _stream: Any = None

    def __init__(self, device: int | str | None = None, latency: str | float = "low",
                 extra_settings: Any = None, frames_per_buffer: int | None = None,
                 stall_timeout: float | None = None, mixer_below_callback: bool = True) -> None:
        if stall_timeout is not None and (isinstance(stall_timeout, bool) or not isinstance(
                stall_timeout, int | float) or not 0 < stall_timeout < float("inf")):
            raise ValueError(f"stall_timeout must be a number of seconds > 0, not "
                             f"{stall_timeout!r}")
        if isinstance(latency, str):
            if latency not in ("low", "high"):
                raise ValueError(f"latency must be 'low', 'high' or seconds > 0, not {latency!r}")
        elif (isinstance(latency, bool) or not isinstance(latency, int | float)
              or not 0 < latency < float("inf")):
            raise ValueError(f"latency must be 'low', 'high' or seconds > 0, not {latency!r}")
        self.device = device
        self.latency = latency
        self.extra_settings = extra_settings
        self.stall_timeout = stall_timeout
        if frames_per_buffer is not None and (isinstance(frames_per_buffer, bool) or not
                                              isinstance(frames_per_buffer, int) or
                                              not 0 <= frames_per_buffer <= 1 << 20):
            raise ValueError(f"frames_per_buffer must be an int 0 .. 2**20 or None, not "
                             f"{frames_per_buffer!r}")
        self.frames_per_buffer = frames_per_buffer
        self.mixer_below_callback = bool(mixer_below_callback)
        self.host_period: int | None = None  #: the server's period (JACK), once asked
        self.mixer_moved: str | None = None  #: what was done about the mixer's priority
        self._last_stats: dict[str, Any] = {}
        self.error: str | None = None
        self.device_index: int | None = None
        self.device_name = ""
        self.hostapi = ""
        self._index = -1
        self._monitor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._started = False
        # Serialises the stream's life (open, start, stop, close) and the native state
        # against stats() from any thread.  Never held while waiting for the monitor, which
        # takes no lock (it may be stopping the engine when someone else stops the sink).
        self._lock = threading.RLock()

    # ---- life cycle (driven by the engine) --------------------------------------------------
    # One PortAudio stream and one native callback state per run: made by open() (so that a
    # device that refuses shows at once) or by a start() after a stop, and closed by stop().
    # PortAudio's finished callback marks the state for good (a stopped stream reports
    # "finished"), so a stream that was stopped is never started again.

    def min_periods(self, blocksize: int) -> int | None:
        """Periods enough for one server period plus one of the engine's, on a JACK device.

        PortAudio's JACK host takes a whole server period at each JACK cycle (in a burst of
        callbacks when the engine's blocksize is smaller), so a ring holding less underruns
        at every cycle; the server's period is asked of libjack (streamcore/sinks/hosts.py).
        ``stats()['host_period']`` says what was found.

        Parameters
        ----------
        blocksize : int
            The engine's period, in frames.

        Returns
        -------
        int or None
            None for other host APIs, or when the device or the server cannot be asked now
            (:meth:`open` then says what is wrong).

        Notes
        -----
        Asked once by the engine's constructor, in its thread.
        """
        from streamcore.sinks.hosts import jack_period

        try:
            sd = _sd()
            if not portaudio_usable():
                return None
            index = resolve_output_device(self.device, list(sd.query_devices()),
                                          list(sd.query_hostapis()), sd.default.device[1])
            hostapi = sd.query_hostapis(sd.query_devices(index)["hostapi"])["name"]
        except Exception:  # no device, no PortAudio: open() reports it properly
            return None
        if "JACK" not in hostapi:
            return None
        self.host_period = jack_period()
        if self.host_period is None:
            return None
        taken = max(self.host_period, self.frames_per_buffer or 0)  # at once, per cycle
        return -(-taken // blocksize) + 1

    def open(self, context: SinkContext) -> None:
        """Find the device, check the settings and open (not start) the stream.

        Parameters
        ----------
        context : SinkContext
            The engine's output ring (the callback reads it), native handle and format.

        Raises
        ------
        NoDeviceError
            PortAudio lists no output device.
        DeviceNotFoundError
            No output device matches ``device``.
        DeviceSettingsError
            The device refused the engine's samplerate, channels, dtype or blocksize.
        ValueError
            ``frames_per_buffer`` needs more periods than the engine's ring has.
        SinkError
            An audio server died under a device sink earlier and no fresh PortAudio could
            be loaded.
        NativeError
            The native callback state could not be made.

        Notes
        -----
        Called by ``Engine.start()`` in its thread, before the mixer runs.  A sink whose
        engine was closed may be opened by another engine: the failure and the figures of
        the earlier run are forgotten.
        """
        sd = _sd()
        with self._lock:
            self.context = context
            self.error, self.mixer_moved, self._last_stats = None, None, {}
            if not portaudio_usable():
                try:
                    _fresh_portaudio()
                except (OSError, SinkError) as e:
                    raise SinkError(f"an audio server died under a device sink in this "
                                    f"process and a fresh PortAudio could not be loaded ({e}): "
                                    f"open the device from a new process") from e
            dtype = _DTYPES[context.dtype.name]
            index = resolve_output_device(self.device, list(sd.query_devices()),
                                          list(sd.query_hostapis()), sd.default.device[1])
            info = sd.query_devices(index)
            self.device_index = self._index = index
            self.device_name = info["name"]
            self.hostapi = sd.query_hostapis(info["hostapi"])["name"]
            try:
                sd.check_output_settings(device=index, channels=context.channels, dtype=dtype,
                                         extra_settings=self.extra_settings,
                                         samplerate=context.samplerate)
            except sd.PortAudioError as e:
                raise DeviceSettingsError(f"the device refused {self._asked(info)}: "
                                          f"PortAudio: {e}") from e
            fpb = self.frames_per_buffer
            if fpb and fpb > (context.periods - 1) * context.blocksize:
                raise ValueError(
                    f"frames_per_buffer {fpb} needs an output ring of at least one period "
                    f"more (periods * blocksize >= {fpb + context.blocksize}); this engine "
                    f"has {context.periods} x {context.blocksize}: raise periods")
            self._open_stream()

    def _asked(self, info: Any = None) -> str:
        context = self._live_context()
        text = (f"samplerate {context.samplerate} Hz, {context.channels} channels, "
                f"{context.dtype.name}, blocksize {context.blocksize} on device "
                f"{self._index} '{self.device_name}' ({self.hostapi}")
        if info is not None:
            text += (f", max {info['max_output_channels']} output channels, default "
                     f"samplerate {info['default_samplerate']:g} Hz")
        return text + ")"

    def _live_context(self) -> SinkContext:
        context = self.context
        if context is None or context.closed:
            raise EngineClosedError("the device sink is not open: its engine is closed (or "
                                    "no engine opened it)")
        return context

    def _open_stream(self) -> None:
        """A new native state and a new PortAudio stream on it (lock held)."""
        sd = _sd()
        context = self._live_context()
        out = _ffi.new("sc_device_sink **")
        ring, keepalive = context.output.native_handle()
        check(_lib.sc_device_sink_create(out, context.engine_handle, ring, context.blocksize),
              "sc_device_sink_create")
        self._state, self._ring_keepalive = out[0], keepalive
        try:
            # The stream keeps both function pointers; _state lives until the stream is
            # closed (_close_stream), so the callback never sees freed memory.
            self._stream = sd._StreamBase(
                kind="output", samplerate=context.samplerate,
                blocksize=(context.blocksize if self.frames_per_buffer is None
                           else self.frames_per_buffer),
                device=self._index, channels=context.channels,
                dtype=_DTYPES[context.dtype.name], latency=self.latency,
                extra_settings=self.extra_settings,
                callback=_ffi.addressof(_lib, "sc_device_sink_callback"),
                finished_callback=sd._ffi.cast("PaStreamFinishedCallback *", _ffi.addressof(
                    _lib, "sc_device_sink_finished")),
                userdata=_ffi.cast("void *", self._state), wrap_callback=None)
        except sd.PortAudioError as e:
            _lib.sc_device_sink_destroy(self._state)
            self._state, self._ring_keepalive = _ffi.NULL, None
            raise DeviceSettingsError(f"could not open {self._asked()}: PortAudio: {e}") from e

    def _close_stream(self) -> None:
        """Close the stream (unless its server died: parked) and free the state (lock held)."""
        stream, self._stream = self._stream, None
        if self._state != _ffi.NULL:
            self._last_stats = self._native_stats(self._state, stream)
        if stream is not None and self.error is None and _portaudio_running():
            with contextlib.suppress(Exception):
                stream.close()   # Pa_CloseStream: no callback runs after it
        elif stream is not None and self.error is not None:
            _park(stream)        # the server is gone: any PortAudio call would block
            self._state = _ffi.NULL  # leaked on purpose (one page): the stream may use it
        # Otherwise PortAudio was terminated (its exit handler ran): every stream is closed.
        if self._state != _ffi.NULL:
            _lib.sc_device_sink_destroy(self._state)
            self._state = _ffi.NULL
        self._ring_keepalive = None

    def start(self) -> None:
        """Start the PortAudio stream (the ring is full) and the monitor thread.

        Raises
        ------
        SinkError
            The device already failed (see :meth:`raise_for_error`).
        EngineClosedError
            The sink's engine is closed (or no engine opened the sink).
        DeviceSettingsError
            After a stop: the device refused to open a new stream.
        sounddevice.PortAudioError
            PortAudio could not start the stream.

        Notes
        -----
        Called by ``Engine.start()`` in its thread, also after a stop (a new stream is
        opened).  With ``mixer_below_callback`` it waits up to 1 s for the first callback
        to learn the audio thread's priority, and may move the mixer (a bus call, up to
        2 s).
        """
        with self._lock:
            self.raise_for_error()
            self._live_context()
            if self._started:
                return
            if self._stream is None:
                self._open_stream()  # the last run's stream was closed by stop()
            self._stopping.clear()
            _lib.sc_device_sink_set_active(self._state, 1)
            self._stream.start()
            self._started = True
            self._monitor = threading.Thread(
                target=self._watch, args=(self._state, self._stream, self._stall_limit()),
                name="streamcore-device-monitor", daemon=True)
            self._monitor.start()
        if self.mixer_below_callback:
            self._place_mixer_below_callback()

    def _place_mixer_below_callback(self, wait: float = 1.0) -> None:
        with self._lock:
            state = self._state
            if state == _ffi.NULL or not self._started:
                return
            s = _ffi.new("sc_device_sink_stats *")
            deadline = time.monotonic() + wait
            while True:
                _lib.sc_device_sink_get_stats(state, s)
                if s.callback_tid or time.monotonic() > deadline:
                    break
                time.sleep(0.002)
        policy, priority = _scheduling(s.callback_tid)
        context = self._live_context()
        grant = context.mixer_grant
        if policy not in ("SCHED_FIFO", "SCHED_RR") or grant is None or not grant.realtime:
            method = getattr(grant, "method", None)
            self.mixer_moved = f"left: audio thread {policy}, mixer {method}"
            return
        priority = cast(int, priority)  # a SCHED_FIFO/RR thread has a priority
        if grant.priority < priority:
            self.mixer_moved = f"left: mixer {grant.priority} already below callback {priority}"
            return
        if priority <= 1:
            self.mixer_moved = f"left: the audio thread runs at {priority}, nothing below"
            return
        new = context.move_mixer(priority - 1)
        if new.realtime:
            self.mixer_moved = f"mixer moved from {grant.priority} to {new.priority} " \
                               f"(audio thread at {priority})"
        else:
            self.mixer_moved = f"left: moving the mixer failed: {'; '.join(new.reasons)}"

    def stop(self) -> None:
        """Stop consuming (what is queued in the ring is dropped), stop and close the stream.

        Notes
        -----
        Idempotent.  Called by ``Engine.stop()``, from the engine's caller's thread or from
        the monitor thread after a failure.  After a failure the stream is parked, never
        stopped (any PortAudio call on it would block).  A later :meth:`start` opens a new
        stream.
        """
        self._stopping.set()
        with self._lock:
            if self._state != _ffi.NULL:
                _lib.sc_device_sink_set_active(self._state, 0)
            monitor, self._monitor = self._monitor, None
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join()  # outside the lock: the monitor may be stopping the engine
        with self._lock:
            if self._started and self._stream is not None and self.error is None \
                    and _portaudio_running():
                self._stream.stop()   # Pa_StopStream: waits for the last callback
            self._started = False
            if self._stream is not None or self._state != _ffi.NULL:
                self._close_stream()

    def close(self) -> None:
        """Stop, close the stream and free the native state (idempotent).

        Notes
        -----
        Called by ``Engine.close()`` in its thread.  The figures stay readable
        (:meth:`stats`) after close; another engine may open the sink again.
        """
        self.stop()

    def __del__(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        # Never PortAudio while the interpreter finalises (the engine's exit hook closed
        # the sink with its engine before that, if it could).
        if self._stream is None or _finalizing():
            return
        try:
            import warnings

            warnings.warn(f"unclosed {self!r}", ResourceWarning, stacklevel=2, source=self)
            self.close()
        except Exception:  # nothing may escape __del__
            pass

    # ---- failure detection (a normal Python thread) -----------------------------------------

    def _stall_limit(self) -> float:
        if self.stall_timeout is not None:
            return float(self.stall_timeout)
        context = self._live_context()
        period: float = context.blocksize / context.samplerate
        reported = float(self._stream.latency) if self._stream is not None else 0.0
        # A wrong report (2**32 frames) must not switch the stall detection off.
        latency = latency_figures(reported, context.samplerate)["latency"] or 0.0
        return max(0.5, 20 * period, 4 * latency)

    def _watch(self, state: Any, stream: Any, limit: float) -> None:
        """The monitor: ``state`` and ``stream`` stay valid until stop() joined it; no lock
        is taken here (stop() may hold it)."""
        s = _ffi.new("sc_device_sink_stats *")
        started = time.monotonic_ns()
        while not self._stopping.wait(0.05):
            _lib.sc_device_sink_get_stats(state, s)
            now = time.monotonic_ns()
            last = s.last_callback_ns or started
            reason = None
            if s.finished:
                reason = "PortAudio ended the stream (the audio server stopped or went away)"
            elif not stream.active:
                reason = "the stream stopped being active (the audio server shut down)"
            elif (now - last) / 1e9 > limit:
                reason = (f"the device stopped calling back for {(now - last) / 1e9:.2f} s "
                          f"(the audio server died or hangs)")
            if reason is None:
                continue
            if self._stopping.is_set():
                return  # a stop raced the check: PortAudio's own "finished", not a failure
            self.error = f"device {self.device_index} '{self.device_name}' ({self.hostapi}): " \
                         + reason
            _lib.sc_device_sink_set_active(state, 0)
            context = self.context
            if context is not None:
                context.fail(self.error)
            return

    # ---- figures ----------------------------------------------------------------------------

    def _native_stats(self, state: Any, stream: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if stream is not None:
            with contextlib.suppress(Exception):  # a closed or terminated stream
                out["samplerate"] = float(stream.samplerate)
                out.update(latency_figures(float(stream.latency), out["samplerate"]))
        s = _ffi.new("sc_device_sink_stats *")
        _lib.sc_device_sink_get_stats(state, s)
        hist = [int(v) for v in s.duration_hist]
        out.update(
            callbacks=s.callbacks, frames=s.frames, ring_frames=s.ring_frames,
            periods=s.periods, underruns=s.underruns, underrun_frames=s.underrun_frames,
            partial_callbacks=s.partial_callbacks, output_underflows=s.output_underflows,
            output_overflows=s.output_overflows, priming=s.priming, xruns=s.xruns,
            xrun_frames=s.xrun_frames,
            frames_min=s.frames_min, frames_max=s.frames_max,
            callback_ns={"min": s.duration_min, "max": s.duration_max,
                         "mean": s.duration_sum / max(1, sum(hist)),
                         "histogram": hist},
            callback_tid=s.callback_tid, active=bool(s.active), finished=bool(s.finished))
        out["callback_policy"], out["callback_priority"] = _scheduling(s.callback_tid)
        return out

    def stats(self) -> dict[str, Any]:
        """Device, host API, PortAudio's latency and samplerate, and the callback's figures.

        Returns
        -------
        dict of str to Any
            ``device``, ``device_name``, ``hostapi``, ``latency`` (s; with
            ``latency_frames`` and ``latency_ms``; None, with ``latency_note``, when the host
            reported an impossible value), ``samplerate`` (Hz),
            and the callback's ``frames``, ``periods``, ``underruns`` (ring short), ``xruns``
            (PortAudio output under/overflow flags), ``frames_min``/``frames_max`` (frames
            asked for), ``callback_ns`` (its duration in ns: min, max, mean, log2
            histogram), ``callback_policy``/``callback_priority`` of the audio thread,
            ``mixer_moved``, ``host_period`` (the JACK server's period the ring was sized
            for, or None) and ``error``.  The callback's figures are those of the current
            stream (a start after a stop counts from zero), or of the last one once stopped.

        Notes
        -----
        Any thread; the callback's counters are read live, without stopping it.
        """
        with self._lock:
            figures = (self._native_stats(self._state, self._stream)
                       if self._state != _ffi.NULL else dict(self._last_stats))
        return {**figures, "name": self.name, "error": self.error,
                "device": self.device_index, "device_name": self.device_name,
                "hostapi": self.hostapi, "mixer_moved": self.mixer_moved,
                "host_period": self.host_period}

    def raise_for_error(self) -> None:
        """Raise :class:`SinkError` if the device failed while playing.

        Raises
        ------
        SinkError
            With :attr:`error`, once the device failed.

        Notes
        -----
        Any thread.
        """
        if self.error is not None:
            raise SinkError(self.error)
