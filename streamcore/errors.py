"""The exception hierarchy and the one translator from C status codes to exceptions.

Every error streamcore raises derives from :class:`StreamcoreError`; each subclass also
derives from the built-in that matches its meaning, so ``except RuntimeError`` or
``except OSError`` keeps working for callers who do not know streamcore.
"""

from __future__ import annotations

import errno as _errno
import os as _os
from typing import cast

__all__ = [
    "CommandQueueFullError",
    "DecodeError",
    "DeviceNotFoundError",
    "DeviceSettingsError",
    "EngineClosedError",
    "EngineTimeoutError",
    "InputLateError",
    "LateStartError",
    "LoopbackNotFoundError",
    "MemoryLockError",
    "MemoryLockWarning",
    "NativeError",
    "NoDeviceError",
    "PeerGoneError",
    "RepromoteRefusedError",
    "RingClosedError",
    "RingCorruptedError",
    "RingFormatError",
    "SinkError",
    "SinkInUseError",
    "StreamcoreError",
    "VoiceLimitError",
    "check",
]


class StreamcoreError(Exception):
    """Base of every error streamcore raises."""


class NativeError(StreamcoreError, OSError):
    """A call into the C core failed; ``errno`` and ``operation`` say which and why.

    Parameters
    ----------
    operation : str
        What was being done, in words (e.g. ``"starting the mixer"``); kept as
        ``operation``.
    code : int
        The positive errno the C function returned negated; kept as ``errno``.
    detail : str, optional
        More context appended to the message.

    Notes
    -----
    Raised by :func:`check`, the one translator of C status codes, in the Python thread that
    made the call.  An ``OSError``: ``except OSError`` catches it.
    """

    def __init__(self, operation: str, code: int, detail: str = "") -> None:
        text = _os.strerror(code) if code else "unknown error"
        name = _errno.errorcode.get(code, str(code))
        message = f"{operation} failed: {text} ({name})"
        if detail:
            message += f": {detail}"
        super().__init__(code, message)
        self.operation = operation

    def __str__(self) -> str:
        return cast(str, self.args[1])  # always the message built in __init__


class MemoryLockError(StreamcoreError, MemoryError):
    """Memory could not be locked (mlock) and locking was required."""


class RingCorruptedError(StreamcoreError, RuntimeError):
    """A shared ring's indices or header were found inconsistent; the ring is now broken."""


def check(status: int, operation: str, detail: str = "") -> int:
    """Return ``status`` when it is not negative, else raise the matching :class:`NativeError`.

    The C core returns 0 (or a count) on success and ``-errno`` on failure.
    """
    if status >= 0:
        return status
    raise NativeError(operation, -status, detail)


class RingFormatError(StreamcoreError, ValueError):
    """A file descriptor given to ``Ring.attach`` is not a ring this build can use.

    Also raised when the ring holds another sample format or channel count than the caller
    expected.
    """


class MemoryLockWarning(RuntimeWarning):
    """Memory could not be locked and the caller allowed running unlocked (``lock='try'``)."""


class EngineClosedError(StreamcoreError, RuntimeError):
    """The engine was closed (or is closing); create a new one.

    Raised by every method of the engine, of its voices and of the sink context it gave its
    sink, when called after :meth:`Engine.close <streamcore.Engine.close>` began, from any
    thread.
    """


class RingClosedError(StreamcoreError, ValueError):
    """The ring handle was closed; every method but ``close()`` raises it from then on.

    A ``ValueError`` (what a closed ring raised before this class existed).  The ring's memory
    may live on while an engine still plays it or a view of it is kept; only this handle is
    closed.
    """


class PeerGoneError(StreamcoreError, BrokenPipeError):
    """The other side of a shared ring is gone: it closed the ring or its process died.

    Parameters
    ----------
    message : str
        What was being done and who is gone.
    side : str
        The side that is gone: ``'writer'`` or ``'reader'``; kept as ``side``.
    pid : int or None
        Its process; kept as ``pid``.
    state : str
        ``'closed'`` (it left) or ``'dead'`` (killed or crashed); kept as ``state``.

    Notes
    -----
    A ``BrokenPipeError`` (so an ``OSError``), as writing to a pipe with no reader is.
    """

    def __init__(self, message: str, side: str = "", pid: int | None = None,
                 state: str = "") -> None:
        super().__init__(_errno.EPIPE, message)
        self.side = side
        self.pid = pid
        self.state = state

    def __str__(self) -> str:
        return str(self.args[1])

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.args[1], self.side, self.pid, self.state))


class VoiceLimitError(StreamcoreError, RuntimeError):
    """Every voice slot of the engine is busy: stop a voice or wait for one to finish."""


class CommandQueueFullError(StreamcoreError, RuntimeError):
    """The mixer did not take commands fast enough (or the engine is not running)."""


class RepromoteRefusedError(StreamcoreError, RuntimeError):
    """Re-promotion to realtime was refused (within the watchdog's cool-down)."""


class EngineTimeoutError(StreamcoreError, TimeoutError):
    """The mixer did not answer in time (it is stuck, or stopped)."""


class DeviceNotFoundError(StreamcoreError, ValueError):
    """No output device matches what was asked; the message lists the output devices."""


class NoDeviceError(StreamcoreError, RuntimeError):
    """PortAudio lists no output device at all (no sound card, no audio server running)."""


class DeviceSettingsError(StreamcoreError, ValueError):
    """The device refused the stream's samplerate, channels or sample format."""


class LateStartError(StreamcoreError, ValueError):
    """A voice asked to start at a frame already rendered, with ``late='error'``."""


class InputLateError(StreamcoreError, ValueError):
    """A recording asked for input frames that had already gone by."""


class LoopbackNotFoundError(StreamcoreError, RuntimeError):
    """The measurement signal played on the outputs did not come back on any input."""


class SinkError(StreamcoreError, RuntimeError):
    """A sink failed while running (audio server gone, disk full, reader gone)."""


class SinkInUseError(StreamcoreError, ValueError):
    """The sink given as ``sink`` already belongs to another engine that is not closed.

    A sink serves one engine at a time; once that engine is closed the sink may serve
    another.
    """


class DecodeError(StreamcoreError, ValueError):
    """An audio file could not be decoded (not a format soundfile reads, or damaged)."""
