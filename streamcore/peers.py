"""Whether the other side of a shared ring still lives: :class:`RingPeer` and the pidfds
that answer it.

Each side of a :class:`~streamcore.Ring` claims its side when it first writes or reads: its
pid and PID namespace go into the ring's shared page (``sc_ring_claim``), and a side that
closes its handle leaves (state ``'closed'``).  A side that dies without leaving (SIGKILL, a
crash) is still ``'open'`` in the page; what tells is its pidfd, which becomes readable when
the process exits.  :class:`PeerWatch` keeps one pidfd per process it was asked about, opened
the first time, so a pid the kernel reuses later is never mistaken for the old peer.

Concurrency: any thread; one lock guards the pidfds.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import weakref
from dataclasses import dataclass

from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib

__all__ = ["SIDES", "PeerWatch", "RingPeer"]

#: The two sides by name, as ``sc_ring_claim`` numbers them.
SIDES = {"writer": _lib.SC_RING_WRITER, "reader": _lib.SC_RING_READER}
_NAMES = {code: name for name, code in SIDES.items()}

_OWN_PIDNS = int(_lib.sc_ring_own_pidns())


@dataclass(frozen=True)
class RingPeer:
    """One side of a ring as the shared page and the kernel tell it.

    Parameters
    ----------
    side : str
        ``'writer'`` or ``'reader'``.
    pid : int or None
        The process that claimed the side (as its PID namespace numbers it); None when no
        one did yet.
    state : str
        ``'none'`` (nobody claimed it yet), ``'alive'``, ``'closed'`` (its handle was closed:
        it left on purpose), ``'dead'`` (the process is gone without leaving: killed or
        crashed) or ``'unknown'`` (it lives in another PID namespace: its pid means nothing
        here).

    Notes
    -----
    A frozen value, made by :attr:`Ring.peer <streamcore.Ring.peer>` and
    :attr:`Ring.stats <streamcore.Ring.stats>`.
    """

    side: str  #: 'writer' or 'reader'
    pid: int | None  #: the claiming process, None when nobody claimed the side
    state: str  #: 'none', 'alive', 'closed', 'dead' or 'unknown'

    @property
    def gone(self) -> bool:
        """True when the side left (``'closed'``) or died (``'dead'``)."""
        return self.state in ("closed", "dead")

    def describe(self) -> str:
        """The side in words, for error messages ("the reader (pid 42) died")."""
        who = f"the {self.side}" + (f" (pid {self.pid})" if self.pid else "")
        return {"closed": f"{who} closed the ring", "dead": f"{who} died without closing "
                "the ring", "alive": f"{who} is alive", "none": f"no {self.side} yet",
                "unknown": f"{who} is in another PID namespace"}[self.state]


class PeerWatch:
    """The pidfds one ring handle opened to learn whether its peers live.

    Notes
    -----
    Made by each :class:`~streamcore.Ring`; closed with it.  Any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _watches.add(self)
        self._pidfds: dict[int, int] = {}  # pid -> its pidfd (-1: it was gone when asked)
        self._dead: set[int] = set()  # pids seen exited: they stay exited
        self._closed = False

    def peer(self, ring: object, side: int) -> RingPeer:
        """What the shared page of ``ring`` (a C handle) says of ``side``, with liveness.

        Parameters
        ----------
        ring : cffi pointer
            The ``sc_ring *``, kept alive by the caller.
        side : int
            ``SC_RING_WRITER`` or ``SC_RING_READER``.

        Returns
        -------
        RingPeer
        """
        raw = _ffi.new("sc_ring_peer *")
        _lib.sc_ring_get_peer(ring, side, raw)
        name = _NAMES[side]
        if raw.state == _lib.SC_RING_PEER_NONE:
            return RingPeer(name, None, "none")
        pid = int(raw.pid)
        if raw.state == _lib.SC_RING_PEER_CLOSED:
            return RingPeer(name, pid, "closed")
        if raw.pidns and _OWN_PIDNS and raw.pidns != _OWN_PIDNS:
            return RingPeer(name, pid, "unknown")
        return RingPeer(name, pid, "alive" if self.alive(pid) else "dead")

    def alive(self, pid: int) -> bool:
        """Whether process ``pid`` (of this PID namespace) has not exited.

        Parameters
        ----------
        pid : int
            A process id.

        Returns
        -------
        bool
            False once it exited (a zombie not yet reaped counts as exited).
        """
        if pid == os.getpid():
            return True
        if pid in self._dead:
            return False
        with self._lock:
            if self._closed:
                return True  # the ring is closed; nothing to say
            fd = self._pidfds.get(pid)
            if fd is None:
                try:
                    fd = os.pidfd_open(pid)
                except ProcessLookupError:
                    fd = -1
                except OSError as e:  # no pidfd_open (kernel < 5.3): ask with signal 0
                    if e.errno not in (errno.ENOSYS, errno.EPERM):
                        raise
                    return _signal_zero(pid)
                self._pidfds[pid] = fd
            poller = select.poll()  # not select(): fds above 1023 are fine
            if fd >= 0:
                poller.register(fd, select.POLLIN)
            if fd < 0 or poller.poll(0):  # readable once it exited
                self._dead.add(pid)
                return False
            return True

    def fd(self, pid: int) -> int | None:
        """The pidfd of ``pid`` (opened now if not yet), for a poll() set; None when the
        process is already gone or pidfds are not available.  Owned by this watch."""
        if not self.alive(pid):
            return None
        with self._lock:
            fd = self._pidfds.get(pid)
            return fd if fd is not None and fd >= 0 else None

    def close(self) -> None:
        """Close every pidfd; idempotent."""
        with self._lock:
            self._closed = True
            fds, self._pidfds = list(self._pidfds.values()), {}
        for fd in fds:
            if fd >= 0:
                os.close(fd)


# Every watch, so that a forked child gets fresh locks: a thread of the parent may have held
# one at the fork, and the child (which has no such thread) would wait for it forever.
_watches: weakref.WeakSet[PeerWatch] = weakref.WeakSet()


def _new_locks_in_child() -> None:
    for watch in list(_watches):
        watch._lock = threading.Lock()


os.register_at_fork(after_in_child=_new_locks_in_child)


def _signal_zero(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
