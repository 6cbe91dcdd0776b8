"""streamcore: zero-copy, realtime audio streaming for Linux.

Map of the API
--------------
Errors
    :class:`StreamcoreError` and its subclasses (``streamcore.errors``).
System facts
    :func:`system_report` (what ``python -m streamcore`` prints).

The realtime path is C (``native/``); Python sets things up, feeds audio and reads figures.
"""

from __future__ import annotations

from streamcore._version import __version__
from streamcore.errors import MemoryLockError, NativeError, RingCorruptedError, StreamcoreError
from streamcore.system import system_report

__all__ = [
    "MemoryLockError",
    "NativeError",
    "RingCorruptedError",
    "StreamcoreError",
    "__version__",
    "system_report",
]
