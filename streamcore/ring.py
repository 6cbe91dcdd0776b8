"""The mlocked mirrored ring: :class:`Ring`, a single-producer / single-consumer queue of audio
frames whose memory numpy sees directly.

One memfd holds a control page (format, the two free-running indices) and the data, and the
data is mapped twice back to back, so any run of up to ``capacity`` frames is one contiguous
numpy array: :meth:`Ring.write_view` hands out the ring's own memory to fill,
:meth:`Ring.commit` publishes it; :meth:`Ring.read_view` / :meth:`Ring.release` are the same
on the reading side.  The fd (:attr:`Ring.fd`) can travel to another process (fork, or
SCM_RIGHTS), which calls :meth:`Ring.attach` to read or write the same frames.

Concurrency contract
--------------------
- One writer and one reader: at most one thread (in any process) calls the writing methods
  (:meth:`~Ring.write_view`, :meth:`~Ring.commit`, :meth:`~Ring.write`) and at most one calls
  the reading methods (:meth:`~Ring.read_view`, :meth:`~Ring.release`, :meth:`~Ring.read`);
  the two may be the same thread, two threads of one process, or two processes.
- Fill levels, :attr:`~Ring.stats` and the other properties may be read from any thread.
- :meth:`~Ring.close` may be called by any thread at any time, also while another thread is
  inside a call: a call that began before finishes on memory that is still mapped, every call
  after it raises :class:`~streamcore.errors.RingClosedError`.  Whether closing is checked and
  which C handle is used is one atomic read of one attribute (the handle together with the
  array that keeps it alive), so no lock is needed on the hot paths.
- An engine playing the ring holds its own reference (:meth:`~Ring.native_handle`): closing
  the ring while a voice plays it closes this Python object at once, and the memory, the fd
  and the locked pages go when the engine hands the voice back.
- Each side knows whether the other lives: a handle claims its side (writer or reader) the
  first time it writes or reads, which puts its pid in the shared page, and leaves when it is
  closed.  :attr:`Ring.peer` says whether the other side is alive, closed or dead (its pidfd
  says so when it died without closing: SIGKILL, a crash).  A writer whose reader is gone and
  a reader whose writer is gone with nothing left to read get
  :class:`~streamcore.errors.PeerGoneError` instead of a ring that never moves again, when
  that peer is another process (or died); a side of the same process that closed only ends
  a wait (the ring stays the process's: an engine's stream voice that ended leaves its
  reading side, and the ring may be played again).
- The other side is not trusted: every index it stores is checked before use.  A value no
  honest peer writes marks the ring broken, and every later call on either side raises
  :class:`~streamcore.errors.RingCorruptedError`; no view ever reaches outside the mapping.
"""

from __future__ import annotations

import asyncio as _asyncio
import errno as _errno
import operator as _operator
import os as _os
import resource as _resource
import time as _time
import warnings as _warnings
import weakref as _weakref
from dataclasses import dataclass
from typing import Any, cast

import numpy as _np

from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.errors import (
    MemoryLockError,
    MemoryLockWarning,
    NativeError,
    PeerGoneError,
    RingClosedError,
    RingCorruptedError,
    RingFormatError,
)
from streamcore.errors import check as _check
from streamcore.peers import PeerWatch, RingPeer

__all__ = ["Ring", "RingPeer", "RingStats"]

_WRITER = _lib.SC_RING_WRITER
_READER = _lib.SC_RING_READER
_OTHER = {_WRITER: _READER, _READER: _WRITER}
_PEER_CLOSED = _lib.SC_RING_PEER_CLOSED
#: How often a side looks at its peer: at most once per this many seconds while it writes or
#: reads, and once per this many seconds while it waits (a futex wait cannot also watch a
#: pidfd, so a wait for a peer in another process is cut into slices this long).
PEER_CHECK_S = 0.02
PEER_WAIT_SLICE_S = 0.05

_FORMATS: dict[_np.dtype, int] = {
    _np.dtype("float32"): _lib.SC_FORMAT_F32,
    _np.dtype("int16"): _lib.SC_FORMAT_S16,
    _np.dtype("int32"): _lib.SC_FORMAT_S32,
}
_DTYPES: dict[int, _np.dtype] = {code: dtype for dtype, code in _FORMATS.items()}

# Rings made with inherit=False are not mapped in a forked child (MADV_DONTFORK): the child's
# copies of their Ring objects are closed right after fork so nothing touches the hole.
_private_rings: _weakref.WeakSet[Ring] = _weakref.WeakSet()


@dataclass(frozen=True)
class RingStats:
    """A snapshot of a ring's counters (:attr:`Ring.stats`).

    Parameters
    ----------
    frames_written : int
        Total frames committed (the shared write index).
    frames_read : int
        Total frames released (the shared read index).
    overruns : int
        Write requests that got fewer frames than asked: the ring was full.
    underruns : int
        Read requests that got fewer frames than asked: the ring was empty.
    corruptions : int
        Inconsistent indices this handle found.
    locked : bool
        This handle mlocked (and prefaulted) the ring's pages.
    locked_bytes : int
        Bytes this handle locked: each physical page once, the mirror not again.
    lock_errno : int
        errno of the failed mlock when ``lock='try'`` went on unlocked, else 0.
    broken : bool
        The ring was marked broken by this side or the other.
    writer : RingPeer
        The writing side: its pid and whether it is alive, closed or dead.
    reader : RingPeer
        The reading side, the same.

    Notes
    -----
    Made by :attr:`Ring.stats`, which any thread may read; a plain frozen value.
    """

    frames_written: int  #: total frames committed (the shared write index)
    frames_read: int  #: total frames released (the shared read index)
    overruns: int  #: write requests that got fewer frames than asked: the ring was full
    underruns: int  #: read requests that got fewer frames than asked: the ring was empty
    corruptions: int  #: inconsistent indices this handle found
    locked: bool  #: the ring's pages are mlocked (and prefaulted)
    locked_bytes: int  #: bytes locked: each physical page once, the mirror not again
    lock_errno: int  #: errno of the failed mlock when ``lock='try'`` went on unlocked, else 0
    broken: bool  #: the ring was marked broken by this side or the other
    writer: RingPeer  #: the writing side: pid, and alive, closed or dead
    reader: RingPeer  #: the reading side: the same


def _count(value: Any, what: str) -> int:
    """A frame count: an integer >= 0."""
    if type(value) is int and value >= 0:  # the common case, first and cheap
        return value
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer number of frames, not a bool")
    try:
        n = _operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer number of frames, "
                        f"not {type(value).__name__}") from None
    if n < 0:
        raise ValueError(f"{what} must be 0 or more frames, not {n}")
    return n


_CLOSED = "the ring is closed"


def _writable_target(out: Any) -> None:
    """Refuse memory the caller may not have written into (checked before anything else)."""
    if isinstance(out, _np.ndarray):
        if not out.flags.writeable:
            raise ValueError("out must be writable: this array is read-only (a view of "
                             "bytes, a read-only mapping, or writeable=False)")
        return
    try:
        view = memoryview(out)
    except TypeError:
        return  # not a buffer at all: the type check that follows says what is expected
    with view:
        if view.readonly:
            raise ValueError(f"out must be writable: this {type(out).__name__} is read-only")


def _positive(value: Any, what: str) -> int:
    n = _count(value, what)
    if n == 0:
        raise ValueError(f"{what} must be at least 1, not 0")
    return n


def _dtype_of(dtype: Any) -> _np.dtype:
    try:
        dt: _np.dtype | None = _np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in _FORMATS:
        raise ValueError(f"dtype must be one of float32, int16, int32, not {dtype!r}")
    return dt


def _lock_mode(lock: Any) -> str | None:
    if lock is True:
        return "required"
    if lock is False or lock is None:
        return None
    if lock == "try":
        return "try"
    raise ValueError(f"lock must be True, False or 'try', not {lock!r}")


def _vmlck_kib() -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmLck:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _limit_text(value: int) -> str:
    return "unlimited" if value == _resource.RLIM_INFINITY else f"{value} bytes"


def _lock_failure_text(needed: int, code: int) -> str:
    soft, hard = _resource.getrlimit(_resource.RLIMIT_MEMLOCK)
    already = _vmlck_kib()
    held = f"; this process already holds {already} KiB locked" if already else ""
    return (f"mlock of the ring's {needed} bytes failed: {_os.strerror(code)} "
            f"({_errno.errorcode.get(code, code)}). RLIMIT_MEMLOCK is {_limit_text(soft)} "
            f"(hard {_limit_text(hard)}){held}. Raise it (`ulimit -l` in the shell that starts "
            f"the program, `memlock` in /etc/security/limits.conf, LimitMEMLOCK= in a systemd "
            f"unit) or grant CAP_IPC_LOCK; or pass lock='try' to run unlocked (page faults may "
            f"then glitch the audio).")


class Ring:
    """A single-producer / single-consumer ring of ``frames`` × ``channels`` samples.

    Parameters
    ----------
    frames : int
        Frames wanted (>= 1), rounded up: the capacity (:attr:`capacity`) is a power of two
        and the data a whole number of pages; at most ``SC_RING_MAX_BYTES`` bytes in all.
    channels : int
        Samples per frame (>= 1).
    dtype : str or numpy.dtype
        ``'float32'``, ``'int16'`` or ``'int32'`` (anything :func:`numpy.dtype` reads as one
        of them).
    lock : bool or 'try'
        True mlocks and prefaults the pages, raising
        :class:`~streamcore.errors.MemoryLockError` when the kernel refuses; ``'try'`` goes
        on unlocked with a :class:`~streamcore.errors.MemoryLockWarning` and says so in
        :attr:`stats`; False does not lock.
    name : str or None
        Labels the memfd (``/proc/PID/fd`` shows ``memfd:streamcore-ring:NAME``).
    inherit : bool
        False: a forked child does not get the mapping (MADV_DONTFORK), and the child's copy
        of this object is closed; keep the default for rings shared by fork.

    Raises
    ------
    TypeError
        ``frames`` or ``channels`` is not an integer, or ``name`` is not a str.
    ValueError
        A count below 1, an unknown ``dtype`` or ``lock``, or a ring larger than a ring may
        hold.
    MemoryLockError
        ``lock=True`` and the kernel refused the mlock (the message says the limit and how to
        raise it).
    NativeError
        memfd_create, ftruncate or mmap failed.

    Notes
    -----
    One writer, one reader: see the module docstring for who may call what.  Closing is
    idempotent; a ring collected while open warns (ResourceWarning).  The memory stays mapped
    while any view handed out by the ring is alive, so a kept view never dangles.  Create
    rings outside the audio path (memfd, mmap and mlock are syscalls).
    """

    # Class-level defaults: close() and __del__ work on an object whose constructor failed
    # half-way (before any of these was set on the instance).
    # _state is (C handle, the writable mirror array, its read-only view): the arrays keep the
    # handle alive (see _adopt), so one read of _state is both the closed check and the
    # handle a call may use to its end.  None once closed.
    _state: tuple[Any, _np.ndarray, _np.ndarray] | None = None
    _closed = True

    def __init__(self, frames: int, channels: int = 2, dtype: Any = "float32",
                 lock: bool | str = True, name: str | None = None, inherit: bool = True) -> None:
        frames = _positive(frames, "frames")
        channels = _positive(channels, "channels")
        dt = _dtype_of(dtype)
        mode = _lock_mode(lock)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        if name is not None and "\0" in name:
            raise ValueError("name must not contain NUL characters")
        out = _ffi.new("sc_ring **")
        # The encoded name only needs to live through the call (the kernel copies it).
        c_name = _ffi.new("char[]", name.encode()) if name else _ffi.NULL
        too_big = frames * channels * dt.itemsize > _lib.SC_RING_MAX_BYTES
        status = -_errno.EINVAL if too_big else _lib.sc_ring_create(
            out, frames, channels, _FORMATS[dt], c_name)
        if status == -_errno.EINVAL:
            raise ValueError(f"a ring of {frames} frames × {channels} channels of {dt} is larger "
                             f"than the {_lib.SC_RING_MAX_BYTES} bytes a ring may hold")
        _check(status, "creating a ring (memfd_create, ftruncate, mmap)")
        self._adopt(out[0])
        self._finish_open(inherit, mode)

    @classmethod
    def attach(cls, fd: int, *, channels: int | None = None, dtype: Any = None,
               lock: bool | str = True, inherit: bool = True) -> Ring:
        """Open the ring whose memfd is ``fd`` to read or write the same frames.

        The shared header is validated (magic, version, format, sizes) before anything is
        used.

        Parameters
        ----------
        fd : int
            The ring's memfd (a :attr:`fd` from another process, received by fork or
            SCM_RIGHTS).  It is duplicated: the caller keeps its own and may close it.
        channels : int or None
            The channels the caller expects; None accepts the ring's.
        dtype : str, numpy.dtype or None
            The sample type the caller expects; None accepts the ring's.
        lock : bool or 'try'
            As for the constructor (locking here prefaults this process's own mappings).
        inherit : bool
            As for the constructor.

        Returns
        -------
        Ring
            A new handle on the same frames; close it like any ring.

        Raises
        ------
        RingFormatError
            ``fd`` is not a ring this build can use, or its channels or dtype differ from the
            ones given.
        RingCorruptedError
            The ring is already marked broken.
        TypeError, ValueError
            A bad ``fd``, ``channels``, ``dtype`` or ``lock``.
        MemoryLockError
            ``lock=True`` and the kernel refused the mlock.
        NativeError
            dup or mmap failed.

        Notes
        -----
        Any thread, outside the audio path.  The new handle becomes the writer or the reader
        by what it is used for: the one-writer, one-reader rule counts every process.
        """
        fd = _count(fd, "fd")
        if fd > 0x7FFFFFFF:
            raise ValueError(f"fd must be a file descriptor (a C int), not {fd}")
        expected_dtype = None if dtype is None else _dtype_of(dtype)
        expected_channels = None if channels is None else _positive(channels, "channels")
        mode = _lock_mode(lock)
        out = _ffi.new("sc_ring **")
        status = _lib.sc_ring_attach(out, fd)
        if status < 0:
            refusal = {
                _errno.EINVAL: "it is not a size-sealed memfd of the size its header states",
                _errno.EPROTO: "its header has no streamcore ring magic",
                _errno.EPROTONOSUPPORT: f"its header version is not {_lib.SC_RING_VERSION}, "
                                        "the one this build speaks",
                _errno.EBADMSG: "its header is inconsistent (format, channels, capacity, size)",
            }.get(-status)
            if refusal is not None:
                raise RingFormatError(f"fd {fd} is not a ring this build can attach: {refusal}")
            if status == -_errno.EPIPE:
                raise RingCorruptedError(f"fd {fd} is a ring already marked broken")
            _check(status, f"attaching the ring of fd {fd}")
        self = cls.__new__(cls)
        self._adopt(out[0])
        if (expected_dtype is not None and expected_dtype != self._dtype) or (
                expected_channels is not None and expected_channels != self._channels):
            found = f"{self._channels} channels of {self._dtype}"
            want = (f"{expected_channels or self._channels} channels of "
                    f"{expected_dtype or self._dtype}")
            self.close()
            raise RingFormatError(f"fd {fd} holds a ring of {found}, expected {want}")
        self._finish_open(inherit, mode)
        return self

    def _adopt(self, handle: Any) -> None:
        """Take ownership of a new C handle and build the numpy array over its mapping."""
        self._capacity = int(_lib.sc_ring_capacity(handle))
        self._channels = int(_lib.sc_ring_channels(handle))
        self._dtype = _DTYPES[int(_lib.sc_ring_format(handle))]
        self._frame_bytes = int(_lib.sc_ring_frame_bytes(handle))
        base = _lib.sc_ring_data(handle)
        self._base = _ffi.cast("char *", base)  # region pointers are measured from here
        # The keeper destroys the handle (unmap, close fd) when it is collected.  It is kept
        # alive by the buffer over it, which the array below holds, which every view handed
        # out holds as its base: the mapping outlives close() for as long as any view lives.
        keeper = _ffi.gc(_ffi.cast("char *", base), lambda _p, h=handle: _lib.sc_ring_destroy(h))
        nbytes = 2 * self._capacity * self._frame_bytes
        mirror = _np.frombuffer(_ffi.buffer(keeper, nbytes), dtype=self._dtype).reshape(
            2 * self._capacity, self._channels)
        # The reader's views are sliced from a read-only view of the same memory.
        readonly = mirror.view()
        readonly.flags.writeable = False
        self._state = (handle, mirror, readonly)
        # Out-parameters, one per side so the writer and the reader thread never share one.
        # Typed char ** so that `pointer - base` is a plain byte offset (no ffi.cast per call);
        # the void ** casts are what the C functions take, and need the char ** kept alive.
        self._write_ptr = _ffi.new("char **")
        self._read_ptr = _ffi.new("char **")
        self._write_arg = _ffi.cast("void **", self._write_ptr)
        self._read_arg = _ffi.cast("void **", self._read_ptr)
        self._granted_write = 0  # frames the last write_view handed out, not yet committed
        self._claims = 0  # the sides this object claimed (_WRITER | _READER)
        self._peers = PeerWatch()
        self._peer_due = {_WRITER: 0.0, _READER: 0.0}  # monotonic time of each side's next look
        self._closed = False

    def _keep_from_children(self) -> None:
        ring, _mirror = self._live()
        _check(_lib.sc_ring_dontfork(ring), "madvise(MADV_DONTFORK) of the ring")
        _private_rings.add(self)

    @property
    def _ring(self) -> Any:
        """The C handle, NULL once closed (for streamcore's own tests and benchmarks, which
        keep the Ring open while they use it; other C users take :meth:`native_handle`)."""
        state = self._state
        return _ffi.NULL if state is None else state[0]

    # ---- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Give up this handle; idempotent.  The mapping and fd go when the last user does.

        Every later call of this object raises :class:`~streamcore.errors.RingClosedError`.
        The memory, the fd and the locked pages are released once nothing uses them any
        more: no view handed out is alive and no engine plays the ring (an engine holds the
        ring from :meth:`Engine.stream <streamcore.Engine.stream>` until it hands the voice
        back).

        Notes
        -----
        Any thread, at any time, also while another thread is inside a call of this ring
        (that call finishes on memory that is still mapped).  Another process's handle on
        the same ring is not affected.
        """
        state = self._state
        self._state = None  # drops the keeper unless a view or an engine still holds it
        if self._closed:
            return
        self._closed = True
        claims = getattr(self, "_claims", 0)
        if claims and state is not None:
            _lib.sc_ring_leave(state[0], claims)  # the peer learns we left (and is woken)
        peers = getattr(self, "_peers", None)
        if peers is not None:
            peers.close()
        discard = getattr(_private_rings, "discard", None)  # None at interpreter teardown
        if discard is not None:
            discard(self)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the constructor failed).

        Notes
        -----
        Any thread.
        """
        return self._closed

    def __enter__(self) -> Ring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed:
            # Plain text, no C call: this may run while the interpreter shuts down.
            try:
                _warnings.warn(f"unclosed Ring of {self._capacity} frames", ResourceWarning,
                               stacklevel=2, source=self)
            finally:
                self.close()

    def __repr__(self) -> str:
        try:
            fd, locked = self.fd, self.locked
        except RingClosedError:  # closed, perhaps by another thread a moment ago
            return "<Ring closed>"
        return (f"<Ring {self._capacity} frames × {self._channels} channels {self._dtype}, "
                f"fd {fd}{', locked' if locked else ''}>")

    def _live(self) -> tuple[Any, _np.ndarray]:
        """The C handle and the array that keeps it alive for the duration of a call."""
        state = self._state
        if state is None:
            raise RingClosedError(_CLOSED)
        return state[0], state[1]

    def _frames_now(self, count: Any, operation: str) -> int:
        """``count(ring)``, a native frame count, checked (raises as :meth:`_fail`)."""
        ring, _mirror = self._live()
        n: int = count(ring)
        if n < 0:
            self._fail(n, operation)
        return n

    def _fail(self, status: int, operation: str) -> None:
        if status == -_errno.EPIPE:
            s = self.stats
            raise RingCorruptedError(
                f"{operation}: the ring is broken: its shared indices were found inconsistent "
                f"(write index {s.frames_written}, read index {s.frames_read}, capacity "
                f"{self._capacity}; {s.corruptions} corruption(s) seen here), so the other side "
                f"wrote values no honest peer writes or marked it broken. Nothing more is read "
                f"or written; make a new ring.")
        _check(status, operation)

    # ---- locking ---------------------------------------------------------------------------

    def _finish_open(self, inherit: bool, mode: str | None) -> None:
        """The constructors' last steps; a failure closes the new ring before it propagates."""
        try:
            if not inherit:
                self._keep_from_children()
            if mode is not None:
                self.lock(required=mode == "required")
        except BaseException:
            self.close()
            raise

    def lock(self, required: bool = True) -> bool:
        """mlock the ring's pages (each physical page once) and prefault both mappings.

        Parameters
        ----------
        required : bool
            True: a refusal raises.  False: a refusal warns
            (:class:`~streamcore.errors.MemoryLockWarning`), is recorded in :attr:`stats`
            (``lock_errno``) and returns False.

        Returns
        -------
        bool
            True when the pages are locked.

        Raises
        ------
        MemoryLockError
            ``required`` and the kernel refused (the message has the bytes needed, the
            RLIMIT_MEMLOCK limit, and how to raise it).
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread, outside the audio path (mlock faults in every page).
        """
        ring, _mirror = self._live()
        status = _lib.sc_ring_lock(ring)
        if status == 0:
            return True
        needed = (self._capacity * self._frame_bytes) + _os.sysconf("SC_PAGE_SIZE")
        text = _lock_failure_text(needed, -status)
        if required:
            raise MemoryLockError(text) from NativeError("mlock", -status)
        _warnings.warn(text, MemoryLockWarning, stacklevel=3)
        return False

    # ---- the writing side ------------------------------------------------------------------

    def write_view(self, n: int) -> _np.ndarray:
        """Writer: a view of up to ``n`` free frames of the ring; fill it, then :meth:`commit`.

        Parameters
        ----------
        n : int
            Frames wanted (>= 0).

        Returns
        -------
        numpy.ndarray
            Shape ``(k, channels)``, k = min(n, :attr:`writable`), of the ring's dtype: no
            copy, never split at the wrap.

        Raises
        ------
        TypeError
            ``n`` is not an integer.
        ValueError
            ``n`` is negative.
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken (the other side stored an impossible index).

        Notes
        -----
        The writer thread only.  The view is the writer's until committed; a new write_view
        replaces the grant.  No allocation besides the view object, no syscall.
        """
        # The hot path is written out flat: on a slow machine each Python call costs ~100 ns.
        state = self._state  # the closed check; keeps the handle alive through the call
        if state is None:
            raise RingClosedError(_CLOSED)
        if type(n) is not int or not 0 <= n <= self._capacity:
            n = min(_count(n, "n"), self._capacity)  # more than the ring holds: all it has
        if (not self._claims & _WRITER or self._peer_due[_WRITER] <= _time.monotonic()
                or _lib.sc_ring_peer_state(state[0], _READER) == _PEER_CLOSED):
            self._look_at_peer(state[0], _WRITER, "write_view")
        k = _lib.sc_ring_write_region(state[0], n, self._write_arg)
        if k < 0:
            self._fail(k, "write_view")
        start = self._region_start(self._write_ptr[0])
        self._granted_write = k
        return state[1][start:start + k]

    def commit(self, k: int) -> None:
        """Writer: publish the first ``k`` frames of the last :meth:`write_view` to the reader.

        Parameters
        ----------
        k : int
            Frames to publish, at most what the last :meth:`write_view` returned.

        Raises
        ------
        TypeError
            ``k`` is not an integer.
        ValueError
            ``k`` is negative or more than was handed out.
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        The writer thread only.  The store of the write index is a release: the reader sees
        the frames before it sees the index move.
        """
        state = self._state  # the closed check; keeps the handle alive through the call
        if state is None:
            raise RingClosedError(_CLOSED)
        if type(k) is not int or k < 0:
            k = _count(k, "k")
        if k > self._granted_write:
            raise ValueError(f"commit(k={k}) is more than the {self._granted_write} frames "
                             f"write_view handed out: commit at most what it returned")
        status = _lib.sc_ring_write_advance(state[0], k)
        if status < 0:
            self._fail(status, "commit")
        self._granted_write -= k

    def write(self, frames: Any, timeout: float | None = 0.0) -> int:
        """Writer: copy ``frames`` into the ring (what fits, or all of it waiting for room).

        The copying twin of :meth:`write_view` + :meth:`commit` (one C call).

        Parameters
        ----------
        frames : numpy.ndarray
            Shape ``(m, channels)``, or ``(m,)`` for one channel, of the ring's dtype.
        timeout : float or None
            0 (the default): no wait, what fits now.  Seconds: wait for room that long at
            most.  None: wait until all of it is written.

        Returns
        -------
        int
            Frames written: fewer than ``m`` when the ring is full (or stays full until the
            timeout, or its reader, in this process, closed its side while this waited).

        Raises
        ------
        TypeError
            Not a numpy array, or not the ring's dtype.
        ValueError
            The wrong shape, or a bad ``timeout``.
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken.
        PeerGoneError
            The reader, in another process, closed the ring or died (also while waiting):
            nothing written would ever be read.

        Notes
        -----
        The writer thread only.  Cancels a pending :meth:`write_view` grant.  A wait is woken
        by the reader's releases (see :meth:`wait_writable`).
        """
        if timeout == 0:
            return self._write(frames, True)
        deadline = None if timeout is None else _time.monotonic() + _timeout_s(timeout)
        array = self._frames_arg(frames, "write(frames)")
        done = self._write(array, True)
        while done < array.shape[0]:
            left = None if deadline is None else max(0.0, deadline - _time.monotonic())
            if left == 0.0:
                break
            if not self._wait(_lib.sc_ring_wait_writable,
                              min(array.shape[0] - done, self._capacity), left, "write"):
                ring, _mirror = self._live()
                if self._peers.peer(ring, _READER).state == "closed":
                    break  # this process's reader left: nothing will make room
            done += self._write(array[done:], True)
        return done

    def _write(self, frames: Any, check_peer: bool) -> int:
        """:meth:`write` without a wait; ``check_peer``: raise PeerGoneError for a gone
        reader (an engine's stream voice looks at its own voice instead)."""
        state = self._state  # the closed check; keeps the handle alive through the call
        if state is None:
            raise RingClosedError(_CLOSED)
        if not self._claims & _WRITER:
            self._claim(state[0], _WRITER)
        if check_peer and (self._peer_due[_WRITER] <= _time.monotonic()
                           or _lib.sc_ring_peer_state(state[0], _READER) == _PEER_CLOSED):
            self._look_at_peer(state[0], _WRITER, "write")
        array = self._frames_arg(frames, "write(frames)")
        if not array.flags.c_contiguous:
            array = _np.ascontiguousarray(array)
        # At most a ring's worth: C takes a uint64 count, and no more fits anyway.
        count = min(array.shape[0], self._capacity)
        # The from_buffer cdata keeps `array` alive for the call, which is all C needs.
        k: int = _lib.sc_ring_write_frames(state[0], _ffi.from_buffer(array), count)
        if k < 0:
            self._fail(k, "write")
        self._granted_write = 0  # the ring moved past any earlier write_view
        return k

    # ---- the reading side ------------------------------------------------------------------

    def read_view(self, n: int) -> _np.ndarray:
        """Reader: a read-only view of up to ``n`` frames of the ring; then :meth:`release`.

        Parameters
        ----------
        n : int
            Frames wanted (>= 0).

        Returns
        -------
        numpy.ndarray
            Read-only, shape ``(k, channels)``, k = min(n, :attr:`readable`): no copy, never
            split at the wrap.

        Raises
        ------
        TypeError
            ``n`` is not an integer.
        ValueError
            ``n`` is negative.
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        The reader thread only.  The frames stay valid until they are released.  Raises
        :class:`~streamcore.errors.PeerGoneError` only when nothing is left to read and the
        writer closed the ring or died: what it wrote is always read first.
        """
        state = self._state  # the closed check; keeps the handle alive through the call
        if state is None:
            raise RingClosedError(_CLOSED)
        if type(n) is not int or not 0 <= n <= self._capacity:
            n = min(_count(n, "n"), self._capacity)  # more than the ring holds: all it has
        if not self._claims & _READER:
            self._claim(state[0], _READER)
        k = _lib.sc_ring_read_region(state[0], n, self._read_arg)
        if k < 0:
            self._fail(k, "read_view")
        if k == 0 and n > 0 and (self._peer_due[_READER] <= _time.monotonic()
                                 or _lib.sc_ring_peer_state(state[0], _WRITER) == _PEER_CLOSED):
            self._look_at_peer(state[0], _READER, "read_view")
        start = self._region_start(self._read_ptr[0])
        return state[2][start:start + k]

    def release(self, k: int) -> None:
        """Reader: hand ``k`` frames back to the writer; pairs with :meth:`read_view`.

        Parameters
        ----------
        k : int
            Frames to release: the first of the last :meth:`read_view`, or unread ones to
            skip; at most :attr:`readable`.

        Raises
        ------
        TypeError
            ``k`` is not an integer.
        ValueError
            ``k`` is negative or more than :attr:`readable`.
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        The reader thread only.
        """
        state = self._state  # the closed check; keeps the handle alive through the call
        if state is None:
            raise RingClosedError(_CLOSED)
        if type(k) is not int or not 0 <= k <= self._capacity:
            k = _count(k, "k")
            if k > self._capacity:
                raise ValueError(f"release(k={k}) is more than the ring's {self._capacity} "
                                 f"frames")
        status = _lib.sc_ring_read_advance(state[0], k)
        if status < 0:
            if status == -_errno.EINVAL:
                raise ValueError(f"release(k={k}) is more than the {self.readable} "
                                 f"readable frames")
            self._fail(status, "release")

    def read(self, n: int, out: _np.ndarray | None = None) -> _np.ndarray:
        """Reader: copy out and release up to ``n`` frames.

        The copying twin of :meth:`read_view` + :meth:`release` (one C call).

        Parameters
        ----------
        n : int
            Frames wanted (>= 0).
        out : numpy.ndarray or None
            A C-contiguous array ``(m, channels)`` of the ring's dtype to copy into (at most
            ``m`` frames); None allocates a new array.

        Returns
        -------
        numpy.ndarray
            The ``(k, channels)`` frames read: ``out[:k]`` when ``out`` was given.

        Raises
        ------
        TypeError
            ``n`` is not an integer, or ``out`` is not an array of the ring's dtype.
        ValueError
            ``n`` is negative, ``out`` is read-only ("out must be writable": a read-only
            array, bytes, a read-only mapping; nothing is written into it and nothing is
            read from the ring), or ``out`` has the wrong shape or is not C-contiguous.
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        The reader thread only.  Without ``out`` it allocates: pass ``out`` on a hot path.
        Raises :class:`~streamcore.errors.PeerGoneError` as :meth:`read_view` does.
        """
        state = self._state  # the closed check; keeps the handle alive through the call
        if state is None:
            raise RingClosedError(_CLOSED)
        n = min(_count(n, "n"), self._capacity)  # more than the ring holds: all it has
        if out is None:
            out = _np.empty((n, self._channels), self._dtype)
        else:
            _writable_target(out)
            out = self._frames_arg(out, "read(out=...)")
            if not out.flags.c_contiguous:
                raise ValueError("read(out=...) needs a C-contiguous array to copy into")
            n = min(n, out.shape[0])
        if not self._claims & _READER:
            self._claim(state[0], _READER)
        # require_writable: C writes into `out` (checked above; cffi checks it again).
        k = _lib.sc_ring_read_frames(state[0], _ffi.from_buffer(out, require_writable=True), n)
        if k < 0:
            self._fail(k, "read")
        if k == 0 and n > 0 and (self._peer_due[_READER] <= _time.monotonic()
                                 or _lib.sc_ring_peer_state(state[0], _WRITER) == _PEER_CLOSED):
            self._look_at_peer(state[0], _READER, "read")
        return out[:k]

    # ---- figures ---------------------------------------------------------------------------

    @property
    def readable(self) -> int:
        """Frames the reader can take now.

        Raises
        ------
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        Any thread; only the writer makes it grow.
        """
        return self._frames_now(_lib.sc_ring_readable, "readable")

    def wait_writable(self, frames: int, timeout: float | None = None) -> bool:
        """Writer: block until ``frames`` frames can be written (or the timeout).

        Parameters
        ----------
        frames : int
            0 .. the capacity.
        timeout : float or None
            Seconds at most; None: no limit.

        Returns
        -------
        bool
            True when that much room is there; False on timeout, or when the reader ended
            (woken to look at why).

        Raises
        ------
        TypeError, ValueError
            ``frames`` or ``timeout`` out of range.
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken (also while waiting).
        PeerGoneError
            The reader closed the ring or died (also while waiting).

        Notes
        -----
        The writer thread only; the GIL is released while it waits.  No polling: the
        reader's next release wakes it (a futex in the ring's shared page, so the reader may
        be another process), and only while someone waits does the reader pay for it (one
        wake per release).  A reader that ended (a stream voice handed back, an engine
        stopped) wakes it too: look at why before waiting again.
        """
        return self._wait(_lib.sc_ring_wait_writable, frames, timeout, "wait_writable")

    async def await_writable(self, frames: int, timeout: float | None = None) -> bool:
        """asyncio: :meth:`wait_writable` without blocking the event loop.

        Parameters
        ----------
        frames : int
            0 .. the capacity.
        timeout : float or None
            Seconds at most; None: no limit.

        Returns
        -------
        bool
            As :meth:`wait_writable`.

        Raises
        ------
        TypeError, ValueError, RingClosedError, RingCorruptedError, PeerGoneError
            As :meth:`wait_writable`.

        Notes
        -----
        The wait is a futex in the ring's shared page (the reader may be another process,
        which can write no fd this loop could watch), so one thread of the loop's default
        executor blocks in it, woken by the reader's release: no polling.  Cancelling the
        coroutine wakes that thread at once (``sc_ring_wake``: any other waiter on this ring
        is woken too and looks again).  For an engine's input tap,
        :meth:`Engine.aread_input <streamcore.Engine.aread_input>` needs no thread.
        """
        return await self._await(self.wait_writable, frames, timeout)

    async def await_readable(self, frames: int, timeout: float | None = None) -> bool:
        """asyncio: :meth:`wait_readable` without blocking the event loop.

        Parameters
        ----------
        frames : int
            0 .. the capacity.
        timeout : float or None
            Seconds at most; None: no limit.

        Returns
        -------
        bool
            As :meth:`wait_readable`.

        Raises
        ------
        TypeError, ValueError, RingClosedError, RingCorruptedError, PeerGoneError
            As :meth:`wait_readable`.

        Notes
        -----
        As :meth:`await_writable`: an executor thread blocks in the futex, woken by the
        writer's commit; cancelling wakes it.
        """
        return await self._await(self.wait_readable, frames, timeout)

    async def _await(self, wait: Any, frames: Any, timeout: Any) -> bool:
        future = _asyncio.get_running_loop().run_in_executor(None, wait, frames, timeout)
        try:
            return bool(await future)
        except _asyncio.CancelledError:
            state = self._state
            if state is not None:
                _lib.sc_ring_wake(state[0])  # the executor thread's wait ends now
            raise

    def _wakes(self) -> int:
        """The ring's wake count (see :meth:`_wait`'s ``since``)."""
        ring, _mirror = self._live()
        return int(_lib.sc_ring_wakes(ring))

    def wait_readable(self, frames: int, timeout: float | None = None) -> bool:
        """Reader: block until ``frames`` frames can be read (or the timeout).

        Parameters
        ----------
        frames : int
            0 .. the capacity.
        timeout : float or None
            Seconds at most; None: no limit.

        Returns
        -------
        bool
            True when that many are there; False on timeout, or when the writer's side
            ended (woken to look at why).

        Raises
        ------
        TypeError, ValueError
            ``frames`` or ``timeout`` out of range.
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken (also while waiting).
        PeerGoneError
            Fewer than ``frames`` are left and the writer closed the ring or died.

        Notes
        -----
        The reader thread only; woken by the writer's next commit, as
        :meth:`wait_writable` is by the reader's release.  While the writer is another
        process the wait also looks at it every ``PEER_WAIT_SLICE_S`` (a futex cannot also
        watch its pidfd), so its death ends the wait within that.
        """
        return self._wait(_lib.sc_ring_wait_readable, frames, timeout, "wait_readable")

    def _wait(self, call: Any, frames: Any, timeout: Any, operation: str,
              since: int | None = None, check_peer: bool = True) -> bool:
        """The waits' common part.  ``since``: the wake count (:meth:`_wakes`) the caller
        saw before it checked whether to wait; a wake after it ends the wait at once.
        ``check_peer``: a gone peer raises PeerGoneError (an engine's stream voice looks at
        its own voice instead)."""
        if isinstance(frames, bool) or not isinstance(frames, int | _np.integer):
            raise TypeError(f"frames must be an int, not {type(frames).__name__}")
        if not 0 <= frames <= self._capacity:
            raise ValueError(f"frames must be within 0..{self._capacity} (the capacity), "
                             f"not {frames}")
        deadline = -1
        if timeout is not None:
            deadline = _time.monotonic_ns() + int(_timeout_s(timeout) * 1e9)
        state = self._state  # keeps the handle alive while C waits on it
        if state is None:
            raise RingClosedError(_CLOSED)
        side = _WRITER if call is _lib.sc_ring_wait_writable else _READER
        wakes = _lib.sc_ring_wakes(state[0]) if since is None else since
        if not check_peer:
            if not self._claims & side:
                self._claim(state[0], side)
            n: int = call(state[0], int(frames), deadline, wakes)
        else:
            n = self._wait_watching_peer(state[0], call, side, int(frames), deadline, wakes,
                                         operation)
        if n in (-_errno.ETIMEDOUT, -_errno.EAGAIN):
            return False
        if n < 0:
            self._fail(n, operation)
        return True

    def _wait_watching_peer(self, ring: Any, call: Any, side: int, frames: int,
                            deadline: int, wakes: int, operation: str) -> int:
        """A wait that raises PeerGoneError when the peer goes: a peer in this process or
        none yet is waited for in one piece (its leaving wakes the ring), one in another
        process in slices of PEER_WAIT_SLICE_S, looking at its pidfd between them."""
        slice_ns = int(PEER_WAIT_SLICE_S * 1e9)
        while True:
            peer = self._look_at_peer(ring, side, operation, frames)
            until = deadline
            if not (peer.pid == _os.getpid() or peer.state == "unknown"):
                now = _time.monotonic_ns()
                until = now + slice_ns if deadline < 0 else min(deadline, now + slice_ns)
            n: int = call(ring, frames, until, wakes)
            if n == -_errno.EAGAIN:  # woken: a peer leaving wakes the ring, so look first
                self._look_at_peer(ring, side, operation, frames)
                return n
            if n != -_errno.ETIMEDOUT or until == deadline:
                return n

    # ---- the peer --------------------------------------------------------------------------

    def _claim(self, ring: Any, side: int) -> None:
        _lib.sc_ring_claim(ring, side)
        self._claims |= side

    def _look_at_peer(self, ring: Any, side: int, operation: str, need: int = 1) -> RingPeer:
        """Claim ``side`` if this object has not yet, and raise PeerGoneError if the other
        side is gone (for a reader: only when fewer than ``need`` frames are left; the
        writer's state is loaded before the level, so what it wrote before leaving counts).
        Returns the peer."""
        if not self._claims & side:
            self._claim(ring, side)
        self._peer_due[side] = _time.monotonic() + PEER_CHECK_S
        peer = self._peers.peer(ring, _OTHER[side])
        # A side of this very process that closed is not an error: the ring stays this
        # process's to play again (a stream voice that ended leaves its reading side), and
        # a wait it was in ends (woken) with what it got.
        gone = peer.state == "dead" or (peer.state == "closed" and peer.pid != _os.getpid())
        if gone and (side == _WRITER or _lib.sc_ring_readable(ring) < need):
            self._peer_due[side] = 0.0  # look again next call: gone stays gone (no syscall)
            consequence = ("nothing written now would be read" if side == _WRITER
                           else "nothing more will come")
            raise PeerGoneError(f"{operation}: {peer.describe()}: {consequence}",
                                side=peer.side, pid=peer.pid, state=peer.state)
        return peer

    @property
    def peer(self) -> RingPeer:
        """The other side of this handle (the reader if it wrote, the writer if it read).

        Returns
        -------
        RingPeer
            Its pid and state: ``'alive'``, ``'closed'``, ``'dead'``, ``'none'`` (nobody
            claimed that side yet) or ``'unknown'`` (another PID namespace).

        Raises
        ------
        RingClosedError
            The ring is closed.
        ValueError
            This handle has not written nor read yet (or did both): say which side with
            :attr:`stats` ``.writer`` / ``.reader``.

        Notes
        -----
        Any thread.  A peer that was killed shows ``'dead'`` at once (its pidfd), one that
        closed its handle ``'closed'``.
        """
        ring, _mirror = self._live()
        if self._claims not in (_WRITER, _READER):
            raise ValueError("this handle has not written nor read yet (or did both), so it "
                             "has no one peer: see stats.writer and stats.reader")
        return self._peers.peer(ring, _OTHER[self._claims])

    @property
    def writable(self) -> int:
        """Frames the writer can fill now.

        Raises
        ------
        RingClosedError
            The ring is closed.
        RingCorruptedError
            The ring is broken.

        Notes
        -----
        Any thread; only the reader makes it grow.
        """
        return self._frames_now(_lib.sc_ring_writable, "writable")

    @property
    def capacity(self) -> int:
        """Frames the ring holds (a power of two, the data a whole number of pages).

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread.
        """
        self._live()
        return self._capacity

    @property
    def channels(self) -> int:
        """Samples per frame.

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread.
        """
        self._live()
        return self._channels

    @property
    def dtype(self) -> _np.dtype:
        """The sample type: float32, int16 or int32.

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread.
        """
        self._live()
        return self._dtype

    @property
    def frame_bytes(self) -> int:
        """Bytes per frame (channels × the sample's size).

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread.
        """
        self._live()
        return self._frame_bytes

    @property
    def fd(self) -> int:
        """The ring's memfd, to pass to another process (fork, SCM_RIGHTS or ``pass_fds``).

        It is close-on-exec and owned by the ring: do not close it, dup it if you need your
        own.  The other process opens it with :meth:`attach`.

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread.
        """
        ring, _mirror = self._live()
        return int(_lib.sc_ring_fd(ring))

    @property
    def buffer(self) -> _np.ndarray:
        """The whole data, ``(capacity, channels)``, each frame once: the first mapping.

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        For inspection and tests: writing into it bypasses the one-writer contract.
        """
        _ring, mirror = self._live()
        return mirror[:self._capacity]

    @property
    def locked(self) -> bool:
        """True when this handle mlocked (and prefaulted) the ring's pages.

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread (a field of :attr:`stats`).
        """
        return self.stats.locked

    @property
    def locked_bytes(self) -> int:
        """Bytes this handle locked: each physical page once, the mirror not again.

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread (a field of :attr:`stats`).
        """
        return self.stats.locked_bytes

    @property
    def broken(self) -> bool:
        """True once either side marked the ring broken (inconsistent indices).

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread (a field of :attr:`stats`).
        """
        return self.stats.broken

    @property
    def stats(self) -> RingStats:
        """Counters of both sides (they live in the shared page) and this handle's own.

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread; the counters are read one by one, so two of them may be one call apart.
        """
        ring, _mirror = self._live()
        raw = _ffi.new("sc_ring_stats *")
        _lib.sc_ring_get_stats(ring, raw)
        return RingStats(
            frames_written=raw.frames_written, frames_read=raw.frames_read,
            overruns=raw.overruns, underruns=raw.underruns, corruptions=raw.corruptions,
            locked=bool(raw.locked), locked_bytes=raw.locked_bytes, lock_errno=raw.lock_errno,
            broken=bool(raw.broken), writer=self._peers.peer(ring, _WRITER),
            reader=self._peers.peer(ring, _READER))

    def native_handle(self) -> tuple[Any, object]:
        """The C handle (``sc_ring *``) and the object that keeps it valid, for C users.

        The engine takes it for the rings its voices play and its sinks read.  The handle
        stays valid, even after :meth:`close`, for as long as the keepalive is referenced:
        hold it as long as C code may use the handle, then drop it (the last one dropped
        unmaps the ring and closes its fd).  The C side must keep to the ring's contract (one
        writer, one reader), like any other user.

        Returns
        -------
        tuple of (cffi pointer, object)
            ``(handle, keepalive)``.

        Raises
        ------
        RingClosedError
            The ring is closed.

        Notes
        -----
        Any thread.
        """
        ring, mirror = self._live()
        return ring, mirror

    _native_handle = native_handle  # the name streamcore used before it was public

    # ---- helpers ---------------------------------------------------------------------------

    def _region_start(self, pointer: Any) -> int:
        """Where a region pointer from C starts in the mirror array, checked to be inside."""
        index: int
        index, rest = divmod(pointer - self._base, self._frame_bytes)
        if rest or not 0 <= index < self._capacity:  # the C side guarantees it; keep it checked
            raise RingCorruptedError(f"a region pointer fell outside the ring (frame {index})")
        return index

    def _frames_arg(self, frames: Any, what: str) -> _np.ndarray:
        if not isinstance(frames, _np.ndarray):
            raise TypeError(f"{what} takes a numpy array of {self._dtype}, "
                            f"not {type(frames).__name__}")
        if frames.dtype != self._dtype:
            raise TypeError(f"{what} takes {self._dtype} frames for this ring, got "
                            f"{frames.dtype}: convert with .astype('{self._dtype}') first")
        if frames.ndim == 1 and self._channels == 1:
            frames = frames.reshape(-1, 1)
        if frames.ndim != 2 or frames.shape[1] != self._channels:
            raise ValueError(f"{what} takes frames of shape (n, {self._channels}), "
                             f"got shape {frames.shape}")
        return cast(_np.ndarray, frames)  # checked to be one above


def _timeout_s(timeout: Any) -> float:
    """A timeout in seconds, checked: a finite number >= 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not (
            0 <= timeout < float("inf")):
        raise ValueError(f"timeout must be seconds >= 0 or None, not {timeout!r}")
    return float(timeout)


def _close_private_rings_in_child() -> None:
    for ring in list(_private_rings):
        ring.close()


_os.register_at_fork(after_in_child=_close_private_rings_in_child)
