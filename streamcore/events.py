"""An engine's watchdog events: the log read from the C event queue, and its subscribers.

:class:`EventLog` polls ``sc_engine_poll_event`` into a list of
:class:`~streamcore.watchdog.Event` records and, once someone subscribes, runs one Python
thread ("streamcore-events") that waits on the engine's event fd and calls each subscriber
with each new event.

Concurrency: the log shares the engine's lock (every native call is made under it, after the
closed check); the delivery thread takes that lock only to poll, and calls the subscribers
without it, so a subscriber may call any engine method, :meth:`Engine.close
<streamcore.Engine.close>` included.  The engine ends delivery (:meth:`EventLog.stop_delivery`)
before it frees the native engine, outside its lock.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections.abc import Callable
from typing import Any

from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.errors import EngineClosedError
from streamcore.watchdog import Event

__all__ = ["EventLog"]

_CLOSED = "the engine is closed; create a new Engine"


class EventLog:
    """The watchdog events of one native engine, kept in order, and their subscribers.

    Parameters
    ----------
    handle : cffi pointer
        The ``sc_engine *``; used only under ``lock`` and only until :meth:`close`.
    lock : threading.RLock
        The engine's lock: every native call of the log is made holding it.

    Notes
    -----
    Made by the engine, never by hand.  Any thread may call any method; the methods that
    need the native engine raise :class:`~streamcore.errors.EngineClosedError` once
    :meth:`close` ran.
    """

    def __init__(self, handle: Any, lock: Any) -> None:
        self._handle = handle
        self._lock = lock
        self._closed = False
        self._events: list[Event] = []
        self._subscribers: list[Callable[[Event], object]] = []
        self._thread: threading.Thread | None = None
        self._wake = threading.Lock()  # guards _stop_pipe, which the thread closes on exit
        self._stop_pipe = (-1, -1)
        self._stopping = False
        # Events made in Python (a sink that failed), queued for the next poll; the eventfd
        # wakes the delivery thread for them as the native event fd does for the watchdog's.
        self._posted: list[Event] = []
        # Guards _posted and _post_fd without the engine's lock: a sink's monitor posts while
        # the engine, holding its lock, may be joining that very monitor.
        self._post_lock = threading.Lock()
        self._post_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.last_demotion: int | None = None  #: CLOCK_MONOTONIC ns of the latest event

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError(_CLOSED)

    def poll(self) -> list[Event]:
        """Move the events the watchdog queued since the last poll into the log.

        Returns
        -------
        list of Event
            The new events, oldest first (also appended to the log).

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread (takes the engine's lock).
        """
        with self._lock:
            self._check_open()
            fresh = []
            ev = _ffi.new("sc_event *")
            while _lib.sc_engine_poll_event(self._handle, ev):
                event = Event._from_native(ev)
                fresh.append(event)
                self.last_demotion = event.time_ns
            with self._post_lock:
                fresh.extend(self._posted)
                self._posted.clear()
            self._events.extend(fresh)
            return fresh

    def post(self, event: Event) -> None:
        """Add an event made in Python (not a demotion) for :meth:`poll` and the subscribers.

        Parameters
        ----------
        event : Event
            The event (``reason`` 'sink_failed' for a sink that failed for good).

        Notes
        -----
        Any thread; takes only the log's own small lock, never the engine's (a sink's thread
        may post while the engine holds its lock and waits for that thread).  Nothing happens
        once the log is closed.
        """
        with self._post_lock:
            if self._closed or self._post_fd < 0:
                return
            self._posted.append(event)
            os.eventfd_write(self._post_fd, 1)

    def all(self) -> list[Event]:
        """Every event so far, oldest first (polls first).

        Returns
        -------
        list of Event
            A new list.

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread.
        """
        with self._lock:
            self.poll()
            return list(self._events)

    def fd(self) -> int:
        """The engine's event fd (readable when the watchdog queued an event).

        Returns
        -------
        int
            A descriptor owned by the native engine: valid until the engine is closed.

        Raises
        ------
        EngineClosedError
            The engine is closed.

        Notes
        -----
        Any thread.
        """
        with self._lock:
            self._check_open()
            return int(_lib.sc_engine_event_fd(self._handle))

    def subscribe(self, callback: Callable[[Event], object]) -> None:
        """Call ``callback(event)`` for every new event, from the delivery thread.

        Parameters
        ----------
        callback : callable
            Takes one :class:`~streamcore.watchdog.Event`; what it returns is ignored.

        Raises
        ------
        TypeError
            ``callback`` is not callable.
        EngineClosedError
            The engine is closed (or closing).

        Notes
        -----
        Any thread.  The first subscriber starts the delivery thread.
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        with self._lock:
            self._check_open()
            if self._stopping:
                raise EngineClosedError(_CLOSED)
            self._subscribers.append(callback)
            if self._thread is None:
                fd = int(_lib.sc_engine_event_fd(self._handle))
                self._stop_pipe = os.pipe()
                self._thread = threading.Thread(target=self._deliver, args=(fd,),
                                                name="streamcore-events", daemon=True)
                self._thread.start()

    def _deliver(self, fd: int) -> None:
        """The delivery thread: ``fd`` stays open until stop_delivery() has joined us."""
        stop = self._stop_pipe[0]
        try:
            while not self._stopping:  # a subscriber may have closed the engine
                readable, _, _ = select.select([fd, stop, self._post_fd], [], [])
                if stop in readable or self._stopping:
                    return
                for ready in readable:  # the native event fd, our own posts
                    with contextlib.suppress(BlockingIOError):
                        os.read(ready, 8)
                with self._lock:
                    if self._closed or self._stopping:
                        return
                    fresh = self.poll()
                    callbacks = list(self._subscribers)
                for event in fresh:
                    for callback in callbacks:
                        callback(event)
        finally:
            with self._wake:
                for end in self._stop_pipe:
                    os.close(end)
                self._stop_pipe = (-1, -1)

    def stop_delivery(self) -> None:
        """End the delivery thread (waits for it, unless called from it); idempotent.

        Notes
        -----
        Any thread, without the engine's lock held (the thread may be waiting for it); the
        engine calls it when it begins to close, so no subscriber runs after the native
        engine is freed.
        """
        with self._lock:
            self._stopping = True
            thread = self._thread
        with self._wake:
            if self._stop_pipe[1] >= 0:
                os.write(self._stop_pipe[1], b"x")
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def close(self) -> None:
        """Forget the native engine (the engine frees it next); the log stays readable.

        Notes
        -----
        Called by the engine under its lock, after :meth:`stop_delivery`.
        """
        with self._lock:
            self._handle = _ffi.NULL
            with self._post_lock:
                self._closed = True
                if self._post_fd >= 0:  # the delivery thread, its only other user, has ended
                    os.close(self._post_fd)
                    self._post_fd = -1

    def _disown(self, lock: Any) -> None:
        """After fork, in the child: closed, with a fresh lock and no thread."""
        self._lock = lock
        self._closed = self._stopping = True
        self._handle = _ffi.NULL
        self._thread = None
        self._wake = threading.Lock()
        self._post_lock = threading.Lock()
        self._stop_pipe = (-1, -1)
