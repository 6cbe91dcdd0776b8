"""The JACK server's notifications, heard by a client of our own (native/jack_host.c): its
xruns, its period changing, its shutdown, and the playback latency of a client's ports.
PortAudio tells none of these.  One-off questions (the period, libjack's version, whether a
client is there) are :mod:`streamcore.jackprobe`'s.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from streamcore.jackprobe import ANSWER_TIMEOUT, bounded_call

__all__ = ["JackWatch"]


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

        answered, opened = bounded_call(open_watch, abandon=close_late)
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
