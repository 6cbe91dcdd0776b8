"""What a sound server says about itself, asked directly: PortAudio does not tell.

PortAudio's JACK host calls a stream back in bursts when the stream's buffer is smaller than
the server's period: at each JACK cycle the whole period is taken at once.  An output ring
that holds less than a server period plus one of the engine's periods underruns at every
cycle (a 128 x 2 engine on a 1024-frame server underran in 7 of 7 runs).  The period is
libjack's ``jack_get_buffer_size`` (JACK2, and PipeWire's quantum through pipewire-jack),
read by a short-lived client that never starts a server.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from collections.abc import Callable
from typing import Any, cast

__all__ = ["JackWatch", "jack_client_present", "jack_period", "jack_version"]

_JACK_NO_START_SERVER = 0x01


#: Seconds a JACK server may take to answer a probe: libjack waits without limit on a server
#: that accepts connections but does not run (a SIGSTOPped jackd: over 60 s, measured).
ANSWER_TIMEOUT = 2.0


def _bounded(call: Callable[[], Any], timeout: float = ANSWER_TIMEOUT,
             abandon: Callable[[Any], None] | None = None) -> tuple[bool, Any]:
    """``(True, call())`` when it returns within ``timeout`` seconds, else ``(False, None)``;
    the call goes on in a daemon thread, and what it returns late goes to ``abandon``."""
    import threading

    result: list[Any] = []
    lock = threading.Lock()
    gave_up = [False]

    def run() -> None:
        value = call()
        with lock:
            if not gave_up[0]:
                result.append(value)
                return
        if abandon is not None:
            abandon(value)

    thread = threading.Thread(target=run, name="streamcore-jack-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    with lock:
        if result:
            return True, result[0]
        gave_up[0] = True
        return False, None


def _with_client(action: Callable[[Any, Any], Any], server: str | None = None) -> Any:
    """Open a short-lived JACK client (never starting a server), run ``action(libjack,
    client)`` and close it; None when there is no libjack or no server answers (within
    :data:`ANSWER_TIMEOUT`)."""
    answered, value = _bounded(lambda: _client_call(action, server))
    return value if answered else None


def _client_call(action: Callable[[Any, Any], Any], server: str | None) -> Any:
    name = ctypes.util.find_library("jack")
    if name is None:
        return None
    try:
        jack = ctypes.CDLL(name)
    except OSError:
        return None
    jack.jack_client_open.restype = ctypes.c_void_p
    jack.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_int), ctypes.c_char_p]
    jack.jack_client_close.argtypes = [ctypes.c_void_p]
    status = ctypes.c_int(0)
    options = _JACK_NO_START_SERVER | (0x04 if server else 0)  # JackServerName
    label = f"streamcore-probe-{os.getpid()}".encode()
    client = jack.jack_client_open(label, options, ctypes.byref(status),
                                   server.encode() if server else None)
    if not client:
        return None
    try:
        return action(jack, client)
    finally:
        jack.jack_client_close(client)


def jack_period(server: str | None = None) -> int | None:
    """The running JACK server's period in frames (``server``: its name; None: the default,
    ``$JACK_DEFAULT_SERVER``), or None when there is no libjack or no server answers.

    Notes
    -----
    Any thread; opens and closes a JACK client (a few milliseconds), never starts a server.
    """
    def period(jack: Any, client: Any) -> int | None:
        jack.jack_get_buffer_size.restype = ctypes.c_uint32
        jack.jack_get_buffer_size.argtypes = [ctypes.c_void_p]
        return int(jack.jack_get_buffer_size(client)) or None

    return cast("int | None", _with_client(period, server))


def jack_version() -> str | None:
    """libjack's version string, e.g. '1.9.21' (JACK2) or '3.0.0.0 (using PipeWire 0.3.65)'
    (PipeWire's libjack); None without libjack or the call.

    Notes
    -----
    Any thread; no client, no server asked.
    """
    name = ctypes.util.find_library("jack")
    if name is None:
        return None
    try:
        call = ctypes.CDLL(name).jack_get_version_string
    except (OSError, AttributeError):
        return None
    call.restype = ctypes.c_char_p
    call.argtypes = []
    value = call()
    return value.decode(errors="replace") if value else None


def jack_client_present(name: str) -> bool | None:
    """Whether the default JACK server has a client called ``name``; None when no server
    answers (or there is no libjack).

    Notes
    -----
    Any thread; opens and closes a JACK client, never starts a server.
    """
    def present(jack: Any, client: Any) -> bool:
        jack.jack_get_uuid_for_client_name.restype = ctypes.c_void_p
        jack.jack_get_uuid_for_client_name.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        jack.jack_free.argtypes = [ctypes.c_void_p]
        uuid = jack.jack_get_uuid_for_client_name(client, name.encode())
        if uuid:
            jack.jack_free(uuid)
        return bool(uuid)

    return cast("bool | None", _with_client(present))


class JackWatch:
    """A JACK client of our own that hears the server's notifications (native/jack_host.c):
    its xruns (every one, once), its period changing, its shutdown; and the playback latency
    of a client's ports.

    Parameters
    ----------
    client_name : str
        The watching client's name (JACK makes it unique).
    server : str or None
        The server's name; None: the default (``$JACK_DEFAULT_SERVER`` or 'default').

    Raises
    ------
    OSError
        No libjack (ENOENT), a libjack without the calls needed (ENOSYS), no server
        (ECONNREFUSED), or one that does not answer within :data:`ANSWER_TIMEOUT`
        (ETIMEDOUT); never starts a server.

    Notes
    -----
    Made and closed by one thread; :meth:`stats` and :meth:`playback_latency` from any
    thread while open.  The client has no ports and no process callback: it is not part of
    the server's processing graph.
    """

    def __init__(self, client_name: str, server: str | None = None) -> None:
        from streamcore._native import ffi, lib

        self._ffi, self._lib = ffi, lib
        self._watch = ffi.NULL

        def open_watch() -> tuple[int, Any]:
            out = ffi.new("sc_jack_watch **")
            rc = lib.sc_jack_watch_open(out, server.encode() if server else ffi.NULL,
                                        client_name.encode())
            return rc, out[0]

        def close_late(opened: tuple[int, Any]) -> None:
            if opened[0] == 0:
                lib.sc_jack_watch_close(opened[1])

        answered, opened = _bounded(open_watch, abandon=close_late)
        if not answered:
            raise OSError(errno.ETIMEDOUT, f"the JACK server did not answer within "
                                           f"{ANSWER_TIMEOUT} s")
        rc, watch = opened
        if rc < 0:
            raise OSError(-rc, f"no JACK notifications: {os.strerror(-rc)}")
        self._watch = watch
        self.version = ffi.string(lib.sc_jack_watch_version(self._watch)).decode(
            errors="replace")  #: libjack's version string ('' if it has none)

    def stats(self) -> dict[str, int | bool]:
        """``xruns`` (since open), ``period`` (frames, now), ``samplerate``,
        ``period_changes`` and ``shutdown`` (the server went away)."""
        s = self._ffi.new("sc_jack_watch_stats *")
        if self._watch != self._ffi.NULL:
            self._lib.sc_jack_watch_get_stats(self._watch, s)
        return {"xruns": int(s.xruns), "period": int(s.period), "samplerate": int(s.samplerate),
                "period_changes": int(s.period_changes), "shutdown": bool(s.shutdown)}

    def follow(self, engine_handle: Any, blocksize: int, base_fill: int, taken_min: int) -> None:
        """From now on a period change sets the engine's fill from the server's notification
        itself, before the first cycle of the new period (see ``sc_jack_watch_follow``):
        a server period (at least ``taken_min``) plus a ``blocksize`` period, never under
        ``base_fill`` frames.  The engine must outlive this watch."""
        if self._watch != self._ffi.NULL:
            self._lib.sc_jack_watch_follow(self._watch, engine_handle, blocksize, base_fill,
                                           taken_min)

    def playback_latency(self, client: str) -> tuple[int, int] | None:
        """The (min, max) playback latency in frames over the output ports of JACK client
        ``client`` (the server's own figure: the path from those ports to the device), or
        None when it has no output ports or the server is gone."""
        import re

        if self._watch == self._ffi.NULL:
            return None
        low, high = self._ffi.new("uint32_t *"), self._ffi.new("uint32_t *")
        found = self._lib.sc_jack_watch_playback_latency(
            self._watch, f"^{re.escape(client)}:".encode(), low, high)
        return (int(low[0]), int(high[0])) if found > 0 else None

    def close(self) -> None:
        """Deactivate and close the client (idempotent; after the server's shutdown the dead
        client is left to libjack)."""
        watch, self._watch = self._watch, self._ffi.NULL
        if watch != self._ffi.NULL:
            self._lib.sc_jack_watch_close(watch)
