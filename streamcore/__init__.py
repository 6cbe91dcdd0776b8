"""streamcore: zero-copy, realtime audio streaming for Linux.

Map of the API
--------------
Rings
    :class:`Ring`: the mlocked, mirrored single-producer / single-consumer frame queue, shared
    between threads or processes (``streamcore.ring``); :class:`RingStats` its counters.
Errors
    :class:`StreamcoreError` and its subclasses (``streamcore.errors``).
Engine
    :class:`Engine` mixes :class:`Voice` and :class:`StreamVoice` objects in a realtime C
    thread; :class:`Watchdog` configures its watchdog; ``streamcore.telemetry`` reads figures.
Sinks (``streamcore.sinks``)
    ``Engine(sink=...)`` takes a :class:`Sink`: :class:`DeviceSink` (a PortAudio device
    through a C callback), :class:`FileSink` (WAV/FLAC/OGG, offline or paced),
    :class:`PipeSink` (a pipe or stdout, vmsplice zero copy).
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
    MemoryLockError,
    MemoryLockWarning,
    NativeError,
    NoDeviceError,
    RingCorruptedError,
    RingFormatError,
    SinkError,
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
from streamcore.sinks import DeviceSink, FileSink, PipeSink, Sink
from streamcore.system import system_report
from streamcore.voice import StreamVoice, Voice
from streamcore.watchdog import Watchdog

__all__ = [
    "DecodeError",
    "DeviceNotFoundError",
    "DeviceSettingsError",
    "DeviceSink",
    "Engine",
    "FileSink",
    "MemoryLockError",
    "MemoryLockWarning",
    "NativeError",
    "NoDeviceError",
    "PipeSink",
    "RealtimeGrant",
    "Ring",
    "RingCorruptedError",
    "RingFormatError",
    "RingStats",
    "Scheduling",
    "Sink",
    "SinkError",
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
