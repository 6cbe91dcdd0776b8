"""streamcore: zero-copy, realtime audio streaming for Linux.

Map of the API
--------------
Errors
    :class:`StreamcoreError` and its subclasses (``streamcore.errors``).
Engine
    :class:`Engine` mixes :class:`Voice` and :class:`StreamVoice` objects in a realtime C
    thread; :class:`Watchdog` configures its watchdog; ``streamcore.telemetry`` reads figures.
System facts
    :func:`system_report` (what ``python -m streamcore`` prints).

The realtime path is C (``native/``); Python sets things up, feeds audio and reads figures.
"""

from __future__ import annotations

from streamcore._version import __version__
from streamcore.engine import Engine
from streamcore.errors import MemoryLockError, NativeError, RingCorruptedError, StreamcoreError
from streamcore.system import system_report
from streamcore.voice import StreamVoice, Voice
from streamcore.watchdog import Watchdog

__all__ = [
    "Engine",
    "MemoryLockError",
    "NativeError",
    "RingCorruptedError",
    "StreamVoice",
    "StreamcoreError",
    "Voice",
    "Watchdog",
    "__version__",
    "system_report",
]
