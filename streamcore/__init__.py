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
Without a usable build of it (missing, or built from other sources), ``import streamcore``
still works and the names that need it raise ImportError saying how to rebuild it.
"""

from __future__ import annotations

import typing as _typing

from streamcore import _facts
from streamcore._version import __version__
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
from streamcore.realtime import (
    RealtimeGrant,
    Scheduling,
    acquire_realtime,
    current_scheduling,
    demote,
)
from streamcore.system import system_report
from streamcore.voice import StreamVoice, Voice

# The rest needs the compiled core.  When it is missing or stale (built from other sources),
# `import streamcore` still works, so that `python -m streamcore info` and `doctor` can say so
# and how to rebuild it; these names then raise ImportError with that line when used.
_NATIVE_PROBLEM = _facts.native_core().problem()
_NEEDS_NATIVE = frozenset({"DeviceSink", "Engine", "FileSink", "PipeSink", "Ring", "RingStats",
                           "Sink", "Watchdog", "decode", "play"})
if _NATIVE_PROBLEM is None:
    from streamcore.engine import Engine
    from streamcore.playback import decode, play
    from streamcore.ring import Ring, RingStats
    from streamcore.sinks import DeviceSink, FileSink, PipeSink, Sink
    from streamcore.watchdog import Watchdog

if not _typing.TYPE_CHECKING:  # for type checkers every name above exists

    def __getattr__(name: str) -> _typing.Any:
        if name in _NEEDS_NATIVE and _NATIVE_PROBLEM is not None:
            raise ImportError(f"streamcore.{name} needs the native core, and {_NATIVE_PROBLEM}")
        raise AttributeError(f"module 'streamcore' has no attribute {name!r}")

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
