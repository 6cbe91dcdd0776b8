"""The device sink: any PortAudio output device, fed by a stream callback written in C.

:class:`DeviceSink` opens the stream through sounddevice but hands PortAudio
``sc_device_sink_callback`` (native/device_sink.c) as the callback and an ``sc_device_sink *``
as userdata (sounddevice's ``_StreamBase`` casts a cdata function pointer to
``PaStreamCallback*``; python-rtmixer uses the same door).  No Python runs in the audio thread:
the callback copies frames from the engine's output ring, advances it and wakes the mixer.

A normal Python thread (the monitor) watches the stream: when PortAudio reports it finished
or no longer active, or the callback has not run for ``stall_timeout`` seconds (the audio
server died), the sink records :attr:`error`, stops consuming and stops the engine.

The audio server dying leaves PortAudio unusable in this process: the stream is then parked,
never called again, and the next device sink loads a fresh copy of the library; all of that
lives in streamcore/sinks/portaudio.py, with why.

On a JACK host (JACK2, or PipeWire through pipewire-jack) the sink also runs a JACK client of
its own without ports (:class:`~streamcore.sinks.hosts.JackWatch`), because PortAudio keeps
what the server says to itself: the monitor counts the server's xruns from it (once per
server cycle, with the XRUN taint), reads the output latency from the server's ports, sees a
shutdown at once, and follows a period change (``jack_bufsize``, a PipeWire quantum change)
by raising the engine's fill to a server period plus a period (the output ring is made with
room for the largest JACK period), or by failing with a clear error when even that cannot
hold it.

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

import numpy as _np

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
from streamcore.sinks import portaudio as _portaudio
from streamcore.sinks.base import Sink, SinkContext

__all__ = [
    "DeviceSink",
    "latency_figures",
    "listed_devices",
    "output_devices",
    "portaudio_usable",
    "resolve_device",
    "resolve_output_device",
]

def portaudio_usable() -> bool:
    """False once an audio server died under a device sink in this process, until the next
    device sink loads a fresh copy of PortAudio (see streamcore/sinks/portaudio.py)."""
    return _portaudio.usable()


_DTYPES = {"float32": "float32", "int16": "int16", "int32": "int32"}
#: The largest period a JACK server runs with (JACK2's limit; PipeWire's default
#: max-quantum): the output ring of a JACK device has room for it plus a period.
JACK_MAX_PERIOD = 8192
_NO_DEVICE_HINT = ("use sink='null' (a timer clock, no device), sink='manual' (offline "
                   "rendering) or a pipe sink (e.g. sink='stdout' into aplay or sox), or start "
                   "an audio server (e.g. jackd -d dummy)")


def _sd() -> Any:
    return _portaudio.sounddevice()


def listed_devices(devices: list[dict[str, Any]], hostapis: list[dict[str, Any]],
                   kind: str = "output") -> list[tuple[int, str]]:
    """``(index, 'name (host API)')`` of every device with ``kind`` ('output' or 'input')
    channels."""
    key = f"max_{kind}_channels"
    return [(i, f"{d['name']} ({hostapis[d['hostapi']]['name']})")
            for i, d in enumerate(devices) if d[key] > 0]


def output_devices(devices: list[dict[str, Any]],
                   hostapis: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """``(index, 'name (host API)')`` of every device with output channels."""
    return listed_devices(devices, hostapis, "output")


def resolve_device(device: int | str | None, devices: list[dict[str, Any]],
                   hostapis: list[dict[str, Any]], default: int, kind: str = "output") -> int:
    """The index of the ``kind`` ('output' or 'input') device ``device`` names (pure: tested
    on data).

    ``None``: ``default`` (PortAudio's default device of that kind), else the first such
    device.  An int: that index, which must have channels of that kind.  A str: the one
    device whose 'name (host API)' contains it (case-insensitive); an exact name wins over
    substrings.  Raises :class:`NoDeviceError` when there is no such device at all, and
    :class:`DeviceNotFoundError` (listing them) when nothing matches.
    """
    key = f"max_{kind}_channels"
    found = listed_devices(devices, hostapis, kind)
    if not found:
        if kind == "input":
            raise NoDeviceError("PortAudio lists no input device (nothing to capture from): "
                                "use an audio server or a card with inputs, or "
                                "input_channels=0; " + _NO_DEVICE_HINT)
        raise NoDeviceError("PortAudio lists no output device (no sound card and no audio "
                            "server running); " + _NO_DEVICE_HINT)
    listing = "; ".join(f"{i}: {label}" for i, label in found)
    if device is None:
        if 0 <= default < len(devices) and devices[default][key] > 0:
            return default
        return found[0][0]
    if isinstance(device, bool) or not isinstance(device, int | str):
        raise TypeError(f"device must be an int, a str or None, not {type(device).__name__}")
    if isinstance(device, int):
        if any(i == device for i, _ in found):
            return device
        raise DeviceNotFoundError(f"no {kind} device has index {device}; {kind} devices: "
                                  f"{listing}")
    wanted = device.lower()
    exact = [i for i, _ in found if devices[i]["name"].lower() == wanted]
    if len(exact) == 1:
        return exact[0]
    matches = [i for i, label in found if wanted in label.lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceNotFoundError(f"no {kind} device matches {device!r}; {kind} devices: "
                                  f"{listing}")
    raise DeviceNotFoundError(f"{device!r} matches several {kind} devices ("
                              + ", ".join(str(i) for i in matches)
                              + f"); give an index or a longer name; {kind} devices: {listing}")


def resolve_output_device(device: int | str | None, devices: list[dict[str, Any]],
                          hostapis: list[dict[str, Any]], default: int) -> int:
    """:func:`resolve_device` for outputs."""
    return resolve_device(device, devices, hostapis, default, "output")


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


#: One device callback (``DeviceSink.timestamps()``): its CLOCK_MONOTONIC start, the engine
#: frame of its first output frame and the input frame of its first captured frame, PortAudio's
#: times (s, the stream's clock) and its frame count and status flags.
DEVICE_TRACE_DTYPE = _np.dtype([
    ("callback_ns", "<i8"), ("output_frame", "<u8"), ("input_frame", "<u8"),
    ("input_adc_time", "<f8"), ("output_dac_time", "<f8"), ("current_time", "<f8"),
    ("frames", "<u4"), ("status", "<u4")])


def _output_latency(stream: Any) -> float:
    """PortAudio's output latency (s) of an output or duplex stream (whose ``latency`` is
    the pair (input, output))."""
    latency = stream.latency
    return float(latency[1] if isinstance(latency, tuple) else latency)


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


#: Seconds a new stream may take to be called back at all: a session manager links a new
#: PipeWire stream some 100 ms after it appears, and PipeWire's ALSA plugin at a 1024-frame
#: quantum took longer than the 0.5 s stall limit to start.
FIRST_CALLBACK_TIMEOUT = 2.0

#: How long aborting a failed stream may take before it is parked instead (seconds).
_ABORT_SECONDS = 2.0


def _abort_within(stream: Any, seconds: float) -> bool:
    """Pa_AbortStream then Pa_CloseStream on ``stream`` in a helper thread; True when both
    returned within ``seconds`` (a host whose server hangs may block them: then False, and
    the helper thread is left blocked, a daemon)."""
    done = threading.Event()

    def abort() -> None:
        with contextlib.suppress(Exception):
            stream.abort()
        with contextlib.suppress(Exception):
            stream.close()
        done.set()

    threading.Thread(target=abort, name="streamcore-device-abort", daemon=True).start()
    return done.wait(seconds)


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
        Frames PortAudio is asked to call back with (>= 0; 0: whatever the host API
        prefers).  None: 0 on a JACK host (PortAudio's advice there: one callback per server
        cycle, nothing buffered by PortAudio), else the engine's blocksize.  The callback
        serves any frame count; on JACK the ring is sized for the server's period.
    stall_timeout : float or None
        Seconds (> 0) without a callback while playing after which the device is considered
        gone; None: the larger of 0.5 s, 20 periods and 4 latencies (before the first
        callback at least :data:`FIRST_CALLBACK_TIMEOUT`).
    input_device : int, str or None
        With ``Engine(input_channels=N)``: the device to capture from, named as ``device``;
        None: the output device when it has inputs (one full-duplex device, as a JACK or
        PipeWire server is), else PortAudio's default input.
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
    captures = True
    _state = _ffi.NULL   # class-level NULL: close() is safe after a failed open()
    _stream: Any = None

    def __init__(self, device: int | str | None = None, latency: str | float = "low",
                 extra_settings: Any = None, frames_per_buffer: int | None = None,
                 stall_timeout: float | None = None, mixer_below_callback: bool = True,
                 input_device: int | str | None = None) -> None:
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
        self.input_device = input_device
        self.input_device_index: int | None = None  #: the device captured from, if any
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
        #: What the sink did when the server's period changed while playing: one dict per
        #: change (``from``, ``to``, ``fill_frames``).
        self.period_changes: list[dict[str, int]] = []
        self._on_jack = False
        self._jack: Any = None  # the JackWatch of the current run
        self._jack_client: str | None = None  # PortAudio's JACK client name
        self.jack_note: str | None = None  #: why there are no JACK notifications, if not
        self._jack_figures: dict[str, Any] = {}  # the server's figures of the last run
        self._profiler: Any = None  # a ProfilerWatch on PipeWire (its missed cycles)
        self._profiler_glitches: int | None = None  # its count, kept after the run
        self.profiler_note: str | None = None  #: why PipeWire's missed cycles are not counted
        self._server_gone = False  # the failure was the server's death: park, never call
        # drain: PortAudio's stream time by which the last frame handed over is played
        self._played_by: float | None = None
        self._played_deadline = 0.0
        self.period_failed = False  #: the run failed on a server period it could not follow
        self.sizing: str | None = None  #: how the fill was fitted to PortAudio's buffer, if it was
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
        at every cycle; the server's period is asked of libjack (streamcore/jackprobe.py).
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
        from streamcore.jackprobe import jack_period

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
        self._on_jack = True
        self.host_period = jack_period()
        if self.host_period is None:
            return None
        return self._periods_for(self.host_period, blocksize)

    def _periods_for(self, host_period: int, blocksize: int) -> int:
        taken = max(host_period, self.frames_per_buffer or 0)  # at once, per cycle
        return -(-taken // blocksize) + 1

    def ring_frames(self, blocksize: int) -> int | None:
        """Room for the largest host period plus a period.

        With :data:`JACK_MAX_PERIOD` frames of room a JACK period change while playing is
        followed by raising the fill, not by underruns, and on other hosts the fill can be
        raised to PortAudio's buffer (see :meth:`start`); a few hundred KiB at most, and the
        fill, not the capacity, is the latency.

        Parameters
        ----------
        blocksize : int
            The engine's period, in frames.

        Returns
        -------
        int or None
            Frames.

        Notes
        -----
        Asked by the engine when it makes its output ring, after :meth:`min_periods`.
        """
        return self._periods_for(JACK_MAX_PERIOD, blocksize) * blocksize

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
            self._jack_figures, self.period_changes = {}, []
            self._server_gone = self.period_failed = False
            if not portaudio_usable():
                try:
                    _portaudio.load_fresh()
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
            self.input_device_index = None
            if context.capture is not None:
                self.input_device_index = self._resolve_input(sd, index, context)
            fpb = self.frames_per_buffer
            if fpb and fpb > (context.periods - 1) * context.blocksize:
                raise ValueError(
                    f"frames_per_buffer {fpb} needs an output ring of at least one period "
                    f"more (periods * blocksize >= {fpb + context.blocksize}); this engine "
                    f"has {context.periods} x {context.blocksize}: raise periods")
            self._open_stream()

    def _resolve_input(self, sd: Any, output_index: int, context: SinkContext) -> int:
        """The device to capture from, checked for the engine's input channels."""
        devices = list(sd.query_devices())
        wanted = self.input_device
        if wanted is None and devices[output_index]["max_input_channels"] > 0:
            wanted = output_index  # one full-duplex device
        index = resolve_device(wanted, devices, list(sd.query_hostapis()),
                               sd.default.device[0], "input")
        info = devices[index]
        assert context.capture is not None
        channels = context.capture.channels
        label = f"{index} '{info['name']}'"
        if channels > info["max_input_channels"]:
            raise DeviceSettingsError(
                f"input_channels={channels} is more than input device {label} has "
                f"({info['max_input_channels']}): ask for at most that many")
        try:
            sd.check_input_settings(device=index, channels=channels, dtype="float32",
                                    samplerate=context.samplerate)
        except sd.PortAudioError as e:
            raise DeviceSettingsError(f"input device {label} refused {channels} channels of "
                                      f"float32 at {context.samplerate} Hz: PortAudio: {e}"
                                      ) from e
        return index

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
        kind = "output"
        device: Any = self._index
        channels: Any = context.channels
        dtype: Any = _DTYPES[context.dtype.name]
        latency: Any = self.latency
        if context.capture is not None:
            # Duplex: the callback writes the captured frames into the capture ring.
            capture, capture_keepalive = context.capture.native_handle()
            check(_lib.sc_device_sink_set_capture(self._state, capture),
                  "sc_device_sink_set_capture")
            self._ring_keepalive = (keepalive, capture_keepalive)
            kind, device = "duplex", (self.input_device_index, self._index)
            channels = (context.capture.channels, context.channels)
            dtype, latency = ("float32", dtype), (latency, latency)
        try:
            # The stream keeps both function pointers; _state lives until the stream is
            # closed (_close_stream), so the callback never sees freed memory.
            self._stream = sd._StreamBase(
                kind=kind, samplerate=context.samplerate,
                blocksize=self._frames_per_buffer(context),
                device=device, channels=channels, dtype=dtype, latency=latency,
                extra_settings=self.extra_settings,
                callback=_ffi.addressof(_lib, "sc_device_sink_callback"),
                finished_callback=sd._ffi.cast("PaStreamFinishedCallback *", _ffi.addressof(
                    _lib, "sc_device_sink_finished")),
                userdata=_ffi.cast("void *", self._state), wrap_callback=None)
        except sd.PortAudioError as e:
            _lib.sc_device_sink_destroy(self._state)
            self._state, self._ring_keepalive = _ffi.NULL, None
            raise DeviceSettingsError(f"could not open {self._asked()}: PortAudio: {e}") from e

    def _frames_per_buffer(self, context: SinkContext) -> int:
        """What PortAudio is asked to call back with: ``frames_per_buffer``, or by default
        0 ("unspecified") on a JACK host, as PortAudio's docs advise for it: one callback
        per server cycle with the server's period, no buffering of PortAudio's own (with a
        fixed size that does not divide the period it buffers up to one callback more);
        elsewhere the engine's blocksize."""
        if self.frames_per_buffer is not None:
            return self.frames_per_buffer
        return 0 if "JACK" in self.hostapi else context.blocksize

    def _close_stream(self) -> None:
        """Close the stream (unless its server died: parked) and free the state (lock held)."""
        stream, self._stream = self._stream, None
        if self._state != _ffi.NULL:
            self._last_stats = self._native_stats(self._state, stream)
        if stream is not None and self.error is None and _portaudio.running():
            with contextlib.suppress(Exception):
                stream.close()   # Pa_CloseStream: no callback runs after it
        elif stream is not None and self.error is not None and _portaudio.running() and (
                self._server_gone or not _abort_within(stream, _ABORT_SECONDS)):
            # Failed: aborted and closed unless its server is gone (then any PortAudio call
            # would block).  A stream left open keeps PortAudio's thread (and the host's, e.g.
            # PipeWire's ALSA plugin's) running into the interpreter's exit: that died with
            # SIGSEGV, so only a server's death (or an abort that hangs) parks it.
            _portaudio.park(stream)
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
            self._fit_buffer(self._live_context())
            _lib.sc_device_sink_set_active(self._state, 1)
            self._stream.start()
            self._started = True
            self._open_jack_watch()
            self._open_profiler()
            self._monitor = threading.Thread(
                target=self._watch,
                args=(self._state, self._stream, self._stall_limit(), self._jack,
                      self._profiler),
                name="streamcore-device-monitor", daemon=True)
            self._monitor.start()
        if self.mixer_below_callback:
            self._place_mixer_below_callback()

    def _fit_buffer(self, context: SinkContext) -> None:
        """Other hosts than JACK: keep PortAudio's whole buffer plus a period rendered
        ahead (lock held).  PortAudio refills its buffer with callbacks back to back when the
        host takes a lot at once: PipeWire's ALSA plugin takes a whole graph quantum (1024
        frames at a common desktop setting), so a 2 x 128 ring underran 46 to 140 times in
        3 s.  The buffer is PortAudio's own output latency for the stream, sanity-checked."""
        if "JACK" in self.hostapi or self._stream is None:
            return
        rate = context.samplerate
        frames = latency_figures(_output_latency(self._stream), rate)["latency_frames"]
        if not frames:
            return
        n = context.blocksize
        wanted = min(-(-frames // n) + 1, context.output.capacity // n) * n
        if wanted > context.fill:
            before = context.fill
            context.set_fill(wanted)
            self.sizing = (f"{wanted} frames kept rendered ahead (was {before}): PortAudio's "
                           f"buffer of {frames} frames plus a period")

    def _open_jack_watch(self) -> None:
        """On a JACK host: a portless client of our own for the server's notifications (lock
        held).  Without it the sink still plays; ``jack_note`` says why it is missing."""
        from streamcore.sinks.hosts import JackWatch

        self._jack, self.jack_note = None, None
        if "JACK" not in self.hostapi:
            return
        try:
            self._jack = JackWatch(f"streamcore-watch-{os.getpid()}")
        except OSError as e:
            self.jack_note = f"no JACK notifications (xruns, period changes): {e.strerror}"
            return
        self._jack_client = _portaudio.jack_client_name()
        context = self._live_context()
        self._jack.follow(context.engine_handle, context.blocksize,
                          context.periods * context.blocksize, self.frames_per_buffer or 0)
        period = int(self._jack.stats()["period"])
        if self.host_period is not None and period and period != self.host_period:
            self._follow_period(context, period)  # changed since the engine was made

    def _on_pipewire(self) -> bool:
        """Whether the stream goes to PipeWire: PortAudio's JACK host on PipeWire's libjack,
        or ALSA's 'pipewire'/'default' device with a PipeWire socket in reach."""
        from streamcore.jackprobe import jack_version

        if "JACK" in self.hostapi:
            return "PipeWire" in (jack_version() or "")
        if "ALSA" not in self.hostapi or self.device_name not in ("pipewire", "default"):
            return False
        folder = os.environ.get("PIPEWIRE_RUNTIME_DIR") or os.environ.get("XDG_RUNTIME_DIR")
        remote = os.environ.get("PIPEWIRE_REMOTE") or "pipewire-0"
        return folder is not None and os.path.exists(os.path.join(folder, remote))

    def _open_profiler(self) -> None:
        """On PipeWire: pw-profiler for the missed cycles it tells no client (lock held)."""
        from streamcore.sinks.pipewire import ProfilerWatch

        self._profiler, self.profiler_note, self._profiler_glitches = None, None, None
        if not self._on_pipewire():
            return
        try:
            self._profiler = ProfilerWatch()
            self._profiler_glitches = 0
        except OSError as e:
            self.profiler_note = (f"PipeWire's missed cycles are not counted: {e.strerror} "
                                  f"(it tells clients of none; its profiler does)")

    def _follow_period(self, context: SinkContext, period: int) -> str | None:
        """The server runs with ``period`` frames now: keep a server period plus a period
        rendered ahead (never less than the engine started with).  Returns a failure reason
        when the output ring cannot hold that, else None.  The monitor's thread (or start's)."""
        old, fill = self.host_period, context.fill
        wanted = max(self._periods_for(period, context.blocksize), context.periods)
        try:
            context.set_fill(wanted * context.blocksize)
        except OverflowError:
            return (f"the JACK server's period changed from {old} to {period} frames while "
                    f"playing; the engine's output ring ({context.output.capacity} frames) "
                    f"cannot hold a server period plus a period of {context.blocksize}: make a "
                    f"new Engine (it sizes itself for the server's period)")
        self.host_period = period
        change = {"from": old or 0, "to": period, "fill_frames": wanted * context.blocksize}
        self.period_changes.append(change)
        context.notify("host_period_changed",
                       f"the audio server's period changed from {old} to {period} frames: the "
                       f"engine keeps {change['fill_frames']} frames rendered ahead (was {fill})")
        return None

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
        the monitor thread after a failure.  After a failure the stream is aborted and
        closed, or parked when its JACK server died (any PortAudio call on it would block).
        A later :meth:`start` opens a new stream.
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
                    and _portaudio.running():
                self._stream.stop()   # Pa_StopStream: waits for the last callback
            self._started = False
            if self._jack is not None:
                self._jack_figures = self._jack_stats(self._jack)
                self._jack.close()
                self._jack = None
            if self._profiler is not None:
                self._profiler.close()
                self._profiler = None
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
        reported = _output_latency(self._stream) if self._stream is not None else 0.0
        # A wrong report (2**32 frames) must not switch the stall detection off.
        latency = latency_figures(reported, context.samplerate)["latency"] or 0.0
        return max(0.5, 20 * period, 4 * latency)

    def _watch(self, state: Any, stream: Any, limit: float, jack: Any,
               profiler: Any) -> None:
        """The monitor: ``state``, ``stream``, ``jack`` (a JackWatch or None) and
        ``profiler`` (a ProfilerWatch or None) stay valid until stop() joined it; no lock is
        taken here (stop() may hold it)."""
        s = _ffi.new("sc_device_sink_stats *")
        started = time.monotonic_ns()
        xruns = [0]
        # PortAudio fills the host's buffer with callbacks as the stream starts, whether
        # anything plays it or not: up to this much taken, the stream has not run yet.
        try:
            rate = float(stream.samplerate)
            primed = latency_figures(_output_latency(stream), rate)["latency_frames"] or 0
        except Exception:  # a stream already gone
            primed = 0
        while not self._stopping.wait(0.05):
            _lib.sc_device_sink_get_stats(state, s)
            now = time.monotonic_ns()
            last = s.last_callback_ns or started
            try:
                reason = self._server_says(jack, xruns) if jack is not None else None
                if profiler is not None:
                    self._count_missed_cycles(profiler)
            except EngineClosedError:
                return  # the engine is closing: its stop() joins this thread
            # Whether the server is gone decides how the stream ends: a JACK stream whose
            # server died is parked (Pa_AbortStream and Pa_CloseStream would block); any
            # other failed stream is aborted and closed (bounded by _ABORT_SECONDS).
            gone = "JACK" in self.hostapi and not self.period_failed
            if reason is None and s.finished:
                reason = "PortAudio ended the stream (the audio server stopped or went away)"
            elif reason is None and not stream.active:
                reason = "the stream stopped being active (the audio server shut down)"
            elif reason is None and s.frames <= primed and (now - last) / 1e9 > max(
                    limit, FIRST_CALLBACK_TIMEOUT):
                reason = (f"the device never ran the stream ({s.frames} frames taken, a "
                          f"buffer's worth at most, in {(now - started) / 1e9:.2f} s): "
                          f"nothing runs it (under PipeWire "
                          f"without a session manager such as WirePlumber nothing links a "
                          f"new stream: link it with pw-link, or start one") + self._stall_hint(
                              stream)
            elif reason is None and s.frames > primed and (now - last) / 1e9 > limit:
                reason = (f"the device stopped calling back for {(now - last) / 1e9:.2f} s "
                          f"(the audio server died or hangs") + self._stall_hint(stream)
            self._server_gone = gone
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

    def _stall_hint(self, stream: Any) -> str:
        """The end of a stall's reason: on ALSA, the buffer may be smaller than what the
        server takes at once (PipeWire's ALSA plugin at a 1024-frame quantum never ran a
        'low' latency stream past its first buffer)."""
        if "ALSA" not in self.hostapi:
            return ")"
        try:
            frames = round(_output_latency(stream) * float(stream.samplerate))
        except Exception:  # a stream that is gone
            return ")"
        return (f"; or PipeWire's quantum is larger than this stream's buffer of {frames} "
                f"frames: try DeviceSink(latency='high') or a larger latency in s)")

    def _count_missed_cycles(self, profiler: Any) -> None:
        """Read PipeWire's profiler (the monitor's thread): new missed cycles taint the run."""
        glitches = profiler.poll().glitches
        if glitches > (self._profiler_glitches or 0):
            self._live_context().taint(_lib.SC_TAINT_XRUN)
        self._profiler_glitches = glitches

    def _server_says(self, jack: Any, xruns: list[int]) -> str | None:
        """One look at the JACK server's notifications (the monitor's thread): new xruns
        taint the run, a period change is followed; returns a failure reason or None."""
        context = self._live_context()
        server = jack.stats()
        if server["xruns"] > xruns[0]:  # the server's own count: once per cycle
            xruns[0] = server["xruns"]
            context.taint(_lib.SC_TAINT_XRUN)
        if server["shutdown"]:
            return "the audio server (JACK) shut down: it stopped or was killed"
        if server["period"] and server["period"] != self.host_period:
            reason = self._follow_period(context, server["period"])
            self.period_failed = reason is not None  # the server is alive: abort, close
            return reason
        return None

    # ---- figures ----------------------------------------------------------------------------

    def _native_stats(self, state: Any, stream: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if stream is not None:
            with contextlib.suppress(Exception):  # a closed or terminated stream
                out["samplerate"] = float(stream.samplerate)
                if isinstance(stream.latency, tuple):  # duplex: (input, output)
                    figures = latency_figures(float(stream.latency[0]), out["samplerate"])
                    out["input_latency_frames"] = figures["latency_frames"]
                    out["input_latency_ms"] = figures["latency_ms"]
                out.update(latency_figures(_output_latency(stream), out["samplerate"]))
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
        if self.input_device_index is not None:
            out.update(input_device=self.input_device_index, input_frames=s.input_frames,
                       input_lost_frames=s.input_lost_frames,
                       input_overflows=s.input_overflows,
                       input_overflow_flags=s.input_overflow_flags,
                       input_underflow_flags=s.input_underflow_flags,
                       io_offset=s.io_offset, io_offset_changes=s.io_offset_changes)
        out["callback_policy"], out["callback_priority"] = _scheduling(s.callback_tid)
        return out

    def timestamps(self, max_records: int = _lib.SC_DEVICE_TRACE_SLOTS) -> _np.ndarray:
        """The stream's most recent callbacks, oldest first.

        Parameters
        ----------
        max_records : int
            At most this many (up to ``SC_DEVICE_TRACE_SLOTS``, 1024).

        Returns
        -------
        numpy.ndarray
            A copy, :data:`DEVICE_TRACE_DTYPE`: how the output and input frame clocks
            advanced and PortAudio's ADC/DAC times at each callback.  Empty when no
            stream is open.
        """
        out = _np.zeros(max(0, min(int(max_records), _lib.SC_DEVICE_TRACE_SLOTS)),
                        dtype=DEVICE_TRACE_DTYPE)
        with self._lock:
            if self._state == _ffi.NULL or out.size == 0:
                return out[:0]
            n = _lib.sc_device_sink_trace(self._state, _ffi.cast(
                "sc_device_trace_record *", _ffi.from_buffer(out)), out.size)
        return out[:n].copy()

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
            ``mixer_moved``, ``host_period`` (the JACK server's period the fill follows, or
            None), ``fill_frames`` (what the mixer keeps rendered ahead now),
            ``period_changes`` (one dict per change followed while playing), and
            ``error``.  On a JACK host also the server's own figures: ``server_xruns`` (its
            xrun notifications this run), ``server_period``, ``jack_version``, and the
            latency comes from the server's ports (``latency_source`` 'JACK ports', else
            'PortAudio'); ``jack_note`` says why they are missing.  The engine adds
            ``periods_asked``/``periods_note`` when it raised ``periods`` for the sink.
            The callback's figures are those of the current stream (a start after a stop
            counts from zero), or of the last one once stopped.

        Notes
        -----
        Any thread; the callback's counters are read live, without stopping it.
        """
        with self._lock:
            figures = (self._native_stats(self._state, self._stream)
                       if self._state != _ffi.NULL else dict(self._last_stats))
            server = (self._jack_stats(self._jack) if self._jack is not None
                      else dict(self._jack_figures))
            context = self.context
            fill = context.fill if context is not None and not context.closed else None
        figures.update(server)
        if self._profiler_glitches is not None:  # PipeWire: its missed cycles are its xruns
            figures["server_xruns"] = self._profiler_glitches
            figures["server_xruns_source"] = "PipeWire profiler (missed cycles)"
        elif "server_xruns" in figures:
            figures["server_xruns_source"] = "JACK xrun notifications"
        frames, rate = server.get("server_latency_frames"), figures.get("samplerate")
        if frames is not None and rate:
            figures.update(latency_figures(frames / rate, rate))
            figures.pop("latency_note", None)
            figures["latency_source"] = "JACK ports"
        elif "latency" in figures:
            figures["latency_source"] = "PortAudio"
        return {**figures, "name": self.name, "error": self.error,
                "device": self.device_index, "device_name": self.device_name,
                "hostapi": self.hostapi, "mixer_moved": self.mixer_moved,
                "host_period": self.host_period, "fill_frames": fill,
                "period_changes": list(self.period_changes), "jack_note": self.jack_note,
                "sizing": self.sizing}

    def _jack_stats(self, jack: Any) -> dict[str, Any]:
        """What the server says (lock held): its xruns since start, period, version, and the
        playback latency of PortAudio's ports (the server's figure, in frames)."""
        server = jack.stats()
        out: dict[str, Any] = {"server_xruns": server["xruns"],
                               "server_period": server["period"], "jack_version": jack.version}
        latency = jack.playback_latency(self._jack_client) if self._jack_client else None
        if latency is not None:
            out["server_latency_frames"] = latency[1]
        return out

    def delivered(self, end_frame: int) -> bool:
        """After ``Engine.drain()``: whether the device has played every frame before the end.

        Played, not only taken from the ring by the callback.
        The callback hands frames to PortAudio up to a latency before the device plays them
        (ALSA through PipeWire's plugin kept ~35 ms; stopping then dropped what had not been
        played).  Once the callback has taken the end, this waits until PortAudio's stream
        clock passes the DAC time of the last frame handed over (from the callback's time
        info), or, where the host gives no DAC times, for the reported latency; at most
        :data:`MAX_PLAUSIBLE_LATENCY` in all.

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
        if context is None or context.closed:
            return True
        if context.frames_taken() < end_frame:
            self._played_by = None
            return False
        with self._lock:
            state, stream = self._state, self._stream
            if state == _ffi.NULL or stream is None or self.error is not None:
                return True
            s = _ffi.new("sc_device_sink_stats *")
            _lib.sc_device_sink_get_stats(state, s)
            try:
                now = float(stream.time)
            except Exception:  # a stream that is no longer running
                return True
        if self._played_by is None:
            rate = float(context.samplerate)
            # the last callback's frames start at its DAC time: its end is a buffer later
            dac = float(s.last_output_dac_time)
            if dac > 0 and abs(dac - now) < MAX_PLAUSIBLE_LATENCY:
                self._played_by = dac + int(s.frames_max) / rate
            else:
                latency = latency_figures(_output_latency(stream), rate)["latency"] or 0.0
                self._played_by = now + latency
            self._played_deadline = time.monotonic() + MAX_PLAUSIBLE_LATENCY
        return now >= self._played_by or time.monotonic() >= self._played_deadline

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
