"""streamcore: zero-copy, realtime audio streaming for Linux.

Map of the API
--------------
Rings
    :class:`Ring`: the mlocked, mirrored single-producer / single-consumer frame queue, shared
    between threads or processes (``streamcore.ring``); :class:`RingStats` its counters.
Errors
    :class:`StreamcoreError` and its subclasses (``streamcore.errors``).
Engine
    :class:`Engine` (a facade) mixes :class:`Voice` and :class:`StreamVoice` objects in a
    realtime C thread; their slots are a ``streamcore.voice.VoiceTable``, its watchdog events
    a ``streamcore.events.EventLog``; :class:`Watchdog` configures the watchdog;
    ``streamcore.telemetry`` reads figures.  An engine still open at interpreter exit is
    closed by an exit hook (with a ResourceWarning).
Sinks (``streamcore.sinks``)
    ``Engine(sink=...)`` takes a :class:`Sink`: :class:`DeviceSink` (a PortAudio device
    through a C callback), :class:`FileSink` (WAV/FLAC/OGG, offline or paced),
    :class:`PipeSink` (a pipe or stdout, vmsplice zero copy).  A sink sees its engine only
    through a :class:`SinkContext`, and serves one engine at a time.
Playing the simple way (``streamcore.playback``)
    :func:`play` (an array or a file, blocking, like ``sounddevice.play`` + ``wait``),
    :func:`decode` (a file to float32 frames, resampled with soxr when asked).
System facts
    :func:`system_report` (what ``python -m streamcore`` prints).
Realtime scheduling (``streamcore.realtime``)
    :func:`acquire_realtime` -> :class:`RealtimeGrant` (direct, rtkit, nice or none, with the
    reasons), :func:`current_scheduling` -> :class:`Scheduling`, :func:`demote`.

The realtime path is C (``native/``); Python sets things up, feeds audio and reads figures.
"""

from __future__ import annotations

from streamcore._version import __version__
from streamcore.engine import Engine
from streamcore.errors import (
    DecodeError,
    DeviceNotFoundError,
    DeviceSettingsError,
    EngineClosedError,
    MemoryLockError,
    MemoryLockWarning,
    NativeError,
    NoDeviceError,
    RingClosedError,
    RingCorruptedError,
    RingFormatError,
    SinkError,
    SinkInUseError,
    StreamcoreError,
)
from streamcore.playback import decode, play
from streamcore.realtime import (
    RealtimeGrant,
    Scheduling,
    acquire_realtime,
    current_scheduling,
    demote,
)
from streamcore.ring import Ring, RingStats
from streamcore.sinks import DeviceSink, FileSink, PipeSink, Sink, SinkContext
from streamcore.system import system_report
from streamcore.voice import StreamVoice, Voice
from streamcore.watchdog import Watchdog

__all__ = [
    "DecodeError",
    "DeviceNotFoundError",
    "DeviceSettingsError",
    "DeviceSink",
    "Engine",
    "EngineClosedError",
    "FileSink",
    "MemoryLockError",
    "MemoryLockWarning",
    "NativeError",
    "NoDeviceError",
    "PipeSink",
    "RealtimeGrant",
    "Ring",
    "RingClosedError",
    "RingCorruptedError",
    "RingFormatError",
    "RingStats",
    "Scheduling",
    "Sink",
    "SinkContext",
    "SinkError",
    "SinkInUseError",
    "StreamVoice",
    "StreamcoreError",
    "Voice",
    "Watchdog",
    "__version__",
    "acquire_realtime",
    "current_scheduling",
    "decode",
    "demote",
    "play",
    "system_report",
]
