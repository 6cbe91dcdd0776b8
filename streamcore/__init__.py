"""streamcore: zero-copy, realtime audio streaming for Linux.

Map of the API
--------------
Rings
    :class:`Ring`: the mlocked, mirrored single-producer / single-consumer frame queue, shared
    between threads or processes (``streamcore.ring``); :class:`RingStats` its counters;
    :class:`RingPeer` what one side knows of the other (alive, closed, dead:
    ``streamcore.peers``).
Errors
    :class:`StreamcoreError` and its subclasses (``streamcore.errors``).
Engine
    :class:`Engine` (a facade) mixes :class:`Voice` and :class:`StreamVoice` objects in a
    realtime C thread; their slots are a ``streamcore.voice.VoiceTable``, its watchdog events
    a ``streamcore.events.EventLog``; :class:`Watchdog` configures the watchdog;
    ``Engine.stream(producer=f)`` runs ``f`` in a process of its own, handed a
    :class:`ProducerStream` (``streamcore.producer``, which also watches such writers);
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
    EngineClosedError,
    InputLateError,
    LateStartError,
    LoopbackNotFoundError,
    MemoryLockError,
    MemoryLockWarning,
    NativeError,
    NoDeviceError,
    PeerGoneError,
    RingClosedError,
    RingCorruptedError,
    RingFormatError,
    SinkError,
    SinkInUseError,
    StreamcoreError,
)
from streamcore.latency import Latency
from streamcore.realtime import (
    RealtimeGrant,
    Scheduling,
    acquire_realtime,
    current_scheduling,
    demote,
)
from streamcore.system import system_report

# The rest needs the compiled core.  When it is missing or stale (built from other sources),
# `import streamcore` still works, so that `python -m streamcore info` and `doctor` can say so
# and how to rebuild it; these names then raise ImportError with that line when used.
_NATIVE_PROBLEM = _facts.native_core().problem()
_NEEDS_NATIVE = frozenset({"DeviceSink", "Engine", "FileSink", "PipeSink", "ProducerStream",
                           "Recording", "Ring", "RingPeer", "RingStats",
                           "Sink", "SinkContext", "StreamVoice", "Voice", "Watchdog", "decode",
                           "play"})
if _NATIVE_PROBLEM is None:
    from streamcore.capture import Recording
    from streamcore.engine import Engine
    from streamcore.playback import decode, play
    from streamcore.producer import ProducerStream
    from streamcore.ring import Ring, RingPeer, RingStats
    from streamcore.sinks import DeviceSink, FileSink, PipeSink, Sink, SinkContext
    from streamcore.voice import StreamVoice, Voice
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
    "EngineClosedError",
    "FileSink",
    "InputLateError",
    "LateStartError",
    "Latency",
    "LoopbackNotFoundError",
    "MemoryLockError",
    "MemoryLockWarning",
    "NativeError",
    "NoDeviceError",
    "PeerGoneError",
    "PipeSink",
    "ProducerStream",
    "RealtimeGrant",
    "Recording",
    "Ring",
    "RingClosedError",
    "RingCorruptedError",
    "RingFormatError",
    "RingPeer",
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
