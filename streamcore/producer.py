"""Producers in processes of their own: the GIL of the engine's process cannot starve them.

A Python thread that computes audio while the main thread runs Python code shares one GIL
with it, and waits for it: a stream voice fed that way underruns as soon as the main thread
is busy (see the README's "Feeding a stream voice").  A producer process has a GIL of its
own and writes straight into the voice's shared ring.

Two halves:

- The producer's side: :class:`ProducerStream`, what the producer function is given in its
  process (``write`` blocks until everything is queued and raises
  :class:`~streamcore.errors.PeerGoneError` once the voice ended or the engine's process is
  gone), and :func:`_run` which attaches the ring and calls the function.
- The engine's side: :func:`spawn` starts the process (multiprocessing's "spawn" start
  method: a fresh interpreter, no copy of the engine's threads), and :class:`WriterWatch`,
  one thread per engine that waits on the pidfds of the processes writing its stream voices'
  rings, spawned or not, and tells the engine when one died without closing its ring.

How each side learns of the other's end: the ring's shared page names both sides
(:mod:`streamcore.peers`).  A producer that returns closes its ring handle: the voice plays
what is queued, then ends 'finished'.  One that dies (killed, crashed, raised) leaves its side
open; its pidfd becomes readable, the watch sees it at once and the voice ends
'producer_died' with an event saying why.  An engine that stops reading (the voice ended,
the engine closed, or its process was killed) makes the producer's next write raise.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import select
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamcore._native import lib as _lib
from streamcore.errors import PeerGoneError
from streamcore.peers import PeerWatch
from streamcore.ring import Ring

__all__ = ["ProducerStream", "WriterWatch", "spawn"]

#: How often the watch looks again at a ring whose writer has not claimed it yet (a process
#: that attaches after the voice began: before it writes, nothing names it to watch).
UNCLAIMED_LOOK_S = 0.1
#: How long :meth:`WriterWatch.close` lets a spawned producer end on its own (its writes
#: raise once the engine stopped reading) before it is killed.
PRODUCER_EXIT_S = 2.0


class ProducerStream:
    """What a producer function is given in its process: the voice's ring and the format.

    Parameters
    ----------
    ring : Ring
        The voice's ring, attached in this process (this process is its writer).
    samplerate : int
        The engine's rate.
    blocksize : int
        The engine's period in frames (a good chunk is one to a few periods).

    Notes
    -----
    Made by streamcore in the producer's process; one thread of it writes.
    """

    def __init__(self, ring: Ring, samplerate: int, blocksize: int) -> None:
        self.ring = ring  #: the voice's ring (write_view/commit for zero copy)
        self.samplerate = samplerate  #: the engine's rate
        self.blocksize = blocksize  #: the engine's period in frames
        self.channels = ring.channels  #: the voice's channels
        self.frames_written = 0  #: frames queued so far

    def write(self, array: Any, timeout: float | None = None) -> int:
        """Queue ``array``, waiting for room as long as it takes (or ``timeout``).

        Parameters
        ----------
        array : numpy.ndarray
            float32 frames, shape ``(m, channels)`` (or ``(m,)`` for one channel).
        timeout : float or None
            Seconds to wait for room at most; None: until all of it is queued.

        Returns
        -------
        int
            Frames queued (``m`` unless the timeout passed).

        Raises
        ------
        PeerGoneError
            The voice ended (stopped, or the engine closed) or the engine's process died:
            return from the producer function (streamcore ends the process quietly when
            this error leaves it).
        TypeError, ValueError
            Not float32 frames of the voice's channels, or a bad ``timeout``.

        Notes
        -----
        Woken by the mixer's reads (a futex in the ring's shared page), never by polling;
        while it waits it also looks at the engine's process every
        :data:`streamcore.ring.PEER_WAIT_SLICE_S`.
        """
        done = self.ring.write(array, timeout=timeout)
        self.frames_written += done
        return done


def _run(sock: socket.socket, target: Callable[..., object], args: tuple[Any, ...],
         kwargs: dict[str, Any], samplerate: int, blocksize: int) -> None:
    """The producer process's main: receive the ring's fd, attach, call ``target``.

    The ring is closed (the voice's goodbye: it plays what is queued, then finishes) only
    when ``target`` returns or the engine went away; if it raises, the process reports the
    traceback and leaves at once without closing, so that the engine ends the voice as
    'producer_died'.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle
    with sock:
        _msg, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
    if not fds:
        os._exit(3)
    with Ring.attach(fds[0], dtype="float32", lock="try") as ring:
        os.close(fds[0])
        stream = ProducerStream(ring, samplerate, blocksize)
        try:
            target(stream, *args, **kwargs)
        except PeerGoneError:
            pass  # the voice ended or the engine is gone: nothing more to do
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)  # no goodbye on the ring: the engine sees the producer died


@dataclass
class _Writer:
    """One stream voice whose writer the watch follows."""

    voice: Any  # the StreamVoice
    handle: Any  # its ring's sc_ring * (kept valid by keepalive); None once the voice ended
    keepalive: object
    process: Any = None  # the multiprocessing.Process streamcore spawned for it, if any
    pid: int | None = None  # the writer followed (None: not claimed yet)
    done: bool = False  # the voice ended: only the spawned process is still waited for


def check_sendable(target: Callable[..., object], args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> None:
    """Raise now, before anything is made, if ``target`` or its arguments cannot reach a
    spawned process (it imports the function by name and unpickles the arguments).

    Raises
    ------
    TypeError
        ``target`` is not callable.
    ValueError
        ``target`` or an argument cannot be pickled (a lambda, a nested function, an open
        file...): the message says which and what to do.
    """
    if not callable(target):
        raise TypeError(f"producer must be a callable, not {type(target).__name__}")
    for what, value in (("the producer", target), ("its arguments", (args, kwargs))):
        try:
            pickle.dumps(value)
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            raise ValueError(f"{what} cannot be sent to the producer process ({e}): use a "
                             f"function defined at a module's top level, and arguments "
                             f"that pickle") from e


def spawn(ring: Ring, target: Callable[..., object], args: tuple[Any, ...],
          kwargs: dict[str, Any], samplerate: int, blocksize: int) -> Any:
    """Start ``target(ProducerStream, *args, **kwargs)`` in a new process writing ``ring``.

    Parameters
    ----------
    ring : Ring
        The voice's ring; its fd is sent to the child over a socket pair (SCM_RIGHTS).
    target : callable
        A function the child can import (module level: multiprocessing's "spawn" start
        method pickles it by name; a script's functions need the usual
        ``if __name__ == "__main__":`` guard).
    args, kwargs
        Its arguments (pickled).
    samplerate, blocksize : int
        The engine's, for :class:`ProducerStream`.

    Returns
    -------
    multiprocessing.Process
        Started; its ``sentinel`` is readable once it ended.

    Raises
    ------
    OSError
        The process could not be started.
    """
    context = multiprocessing.get_context("spawn")
    # The pair carries the ring's fd; multiprocessing gives the child a duplicate of the
    # socket's own fd.
    ours, theirs = socket.socketpair()
    process = context.Process(target=_run, args=(theirs, target, args, kwargs, samplerate,
                                                 blocksize),
                              name=f"streamcore-producer-{getattr(target, '__name__', '')}",
                              daemon=True)
    try:
        process.start()
    finally:
        theirs.close()
    try:
        with ours:
            socket.send_fds(ours, [b"r"], [ring.fd])
    except OSError:
        process.kill()
        process.join()
        raise
    return process


class WriterWatch:
    """The engine's watch over the processes that write its stream voices' rings.

    Parameters
    ----------
    on_death : callable
        ``on_death(voice, detail)``, called from the watch's thread when a voice's writer
        died without closing the ring (``detail`` says who and how).

    Notes
    -----
    Made by the engine.  One thread ("streamcore-writers"), started with the first voice
    that has a writer in another process; it blocks in poll() on the writers' pidfds (and a
    spawned producer's sentinel), so a death is seen the moment the kernel reaps it.  Only
    a ring passed in whose writer has not claimed it yet is looked at on a timer
    (:data:`UNCLAIMED_LOOK_S`) until it has.  Any thread may call the methods.
    """

    def __init__(self, on_death: Callable[[Any, str], None]) -> None:
        self._on_death = on_death
        self._lock = threading.Lock()
        self._writers: list[_Writer] = []
        self._peers = PeerWatch()
        self._control = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._thread: threading.Thread | None = None
        self._closing = False

    def watch(self, voice: Any, ring: Ring, process: Any = None) -> None:
        """Follow the writer of ``voice``'s ring (``process``: the one streamcore spawned).

        Parameters
        ----------
        voice : StreamVoice
            The voice (its end stops the following).
        ring : Ring
            Its ring.
        process : multiprocessing.Process or None
            The producer process streamcore started for it.
        """
        handle, keepalive = ring.native_handle()
        writer = _Writer(voice, handle, keepalive, process,
                         pid=None if process is None else process.pid)
        with self._lock:
            if self._closing:
                return
            self._writers.append(writer)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="streamcore-writers",
                                                daemon=True)
                self._thread.start()
        voice._on_end(lambda: self._voice_ended(writer))
        os.eventfd_write(self._control, 1)

    def _voice_ended(self, writer: _Writer) -> None:
        """The voice was handed back (the table's lock is held): let go of its ring now, so
        its memory goes with the table's pin; a spawned process is still waited for."""
        with self._lock:
            writer.done = True
            writer.handle = writer.keepalive = None
            if writer.process is None and writer in self._writers:
                self._writers.remove(writer)
        with contextlib.suppress(OSError):
            os.eventfd_write(self._control, 1)

    def _run(self) -> None:
        while True:
            fds: dict[int, _Writer] = {}
            timeout = None
            dead: list[_Writer] = []
            with self._lock:
                if self._closing:
                    return
                for writer in list(self._writers):
                    fd = self._fd_of(writer, dead)
                    if fd is None:
                        if writer.pid is None and not writer.done:
                            timeout = int(UNCLAIMED_LOOK_S * 1000)  # not claimed yet
                        continue
                    fds[fd] = writer
            for writer in dead:  # outside the lock: the engine's lock is taken for it
                self._report(writer, f"the writer of its ring (pid {writer.pid}) died "
                                     "without closing it")
            poller = select.poll()
            poller.register(self._control, select.POLLIN)
            for fd in fds:
                poller.register(fd, select.POLLIN)
            ready = [fd for fd, _ in poller.poll(timeout)]
            if self._control in ready:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._control)
            for fd in ready:
                if fd in fds:
                    self._ended(fds[fd])

    def _fd_of(self, writer: _Writer, dead: list[_Writer]) -> int | None:
        """The fd to poll for ``writer`` (lock held): a spawned producer's sentinel, or the
        pidfd of the process that claimed the ring; None when there is none (yet).  A voice
        whose writer turns out to be this process is dropped, one found dead already goes
        into ``dead`` (to report once the lock is released)."""
        if writer.process is not None:
            return int(writer.process.sentinel)
        if writer.done or writer.handle is None:
            return None
        peer = self._peers.peer(writer.handle, _lib.SC_RING_WRITER)
        if peer.state == "none":
            return None
        writer.pid = peer.pid
        if peer.state in ("closed", "unknown") or peer.pid == os.getpid():
            self._writers.remove(writer)  # nothing to watch: its goodbye ends the voice
            return None
        if peer.state == "dead":
            self._writers.remove(writer)
            dead.append(writer)
            return None
        assert peer.pid is not None
        return self._peers.fd(peer.pid)

    def _ended(self, writer: _Writer) -> None:
        """The process behind ``writer`` exited."""
        detail = None
        with self._lock:
            if writer in self._writers:
                self._writers.remove(writer)
            closed = writer.handle is not None and _lib.sc_ring_writer_closed(writer.handle)
            if writer.process is not None:
                writer.process.join()
                code = writer.process.exitcode
                how = (f"was killed by signal {-code}" if code is not None and code < 0
                       else f"exited with status {code}")
                if not closed and not writer.done:
                    detail = f"its producer process (pid {writer.pid}) {how}"
            elif not closed and not writer.done:
                detail = f"the writer of its ring (pid {writer.pid}) died without closing it"
        if detail is not None:
            self._report(writer, detail)

    def _report(self, writer: _Writer, detail: str) -> None:
        self._on_death(writer.voice, detail)

    def _disown(self) -> None:
        """After fork, in the child: the thread and the processes are the parent's."""
        self._lock = threading.Lock()
        self._closing = True
        self._writers = []

    def close(self) -> None:
        """End the thread; wait for spawned producers to end (their writes raise once the
        engine stopped reading), killing those that do not within PRODUCER_EXIT_S."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            processes = [w.process for w in self._writers if w.process is not None]
            self._writers.clear()
        os.eventfd_write(self._control, 1)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        for process in processes:
            process.join(PRODUCER_EXIT_S)
            if process.exitcode is None:
                process.kill()
                process.join()
        self._peers.close()
        os.close(self._control)
