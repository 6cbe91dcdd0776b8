"""Taking realtime back after someone else took it: :class:`Reacquirer`.

The watchdog thread looks at the mixer's scheduling policy at every interval it runs anyway
(no syscall is added to the mixer's cycle).  When the mixer was realtime at one look and is
not at the next, and the watchdog did not demote it itself, someone else did: rtkit's canary
(it demotes every thread it ever granted when it believes the system starves, which happens
after a suspend and resume), an administrator's ``chrt``, a session manager.  The watchdog
then queues a ``lost_realtime`` event and sets the REALTIME_LOST taint; nothing is done in C.

What happens next is the engine's ``reacquire`` policy, carried out here, in Python, off the
audio path:

``'never'``
    Report only.  The mixer stays where it was put.
``'once'``
    One attempt through the same chain as at start (direct, rtkit, ...), a second after the
    loss.
``'backoff'`` (the default)
    Attempts at 1 s, 2 s, 4 s ... up to :data:`MAX_DELAY_S` apart until one succeeds.  The
    delay keeps growing while losses keep coming (a loss within :data:`STABLE_S` of the last
    regain doubles it instead of starting over), so a peer that keeps demoting us is not
    fought at full speed.

Why backoff by default: after rtkit's canary fires, rtkit refuses every grant for its refuse
period (300 s by default); a single attempt would be refused and the audio would glitch for
the rest of the session, which is the failure users report (rtkit #13).  Backed off, the
attempts stay far below rtkit's rate limit (25 grants per 20 s per user; each attempt asks
for two threads, the mixer and the watchdog), and realtime comes back as soon as rtkit allows
it.  Each attempt, its method and the reasons of the steps that failed are kept
(:meth:`Reacquirer.stats`), and a regain is an event, ``realtime_regained``.

Concurrency: :meth:`Reacquirer.lost` is called by the engine's event delivery thread; the
attempts run on a timer thread; :meth:`Reacquirer.close` (the engine's close) cancels what is
pending and waits for an attempt in progress.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from streamcore.errors import StreamcoreError
from streamcore.realtime import RealtimeGrant

__all__ = ["MAX_DELAY_S", "POLICIES", "STABLE_S", "Reacquirer"]

#: The policies ``Engine(reacquire=...)`` accepts.
POLICIES = ("never", "once", "backoff")
FIRST_DELAY_S = 1.0  #: the first attempt comes this long after the loss
#: The longest wait between attempts: rtkit's default refuse period after a canary alarm.
MAX_DELAY_S = 300.0
#: Realtime kept this long after a regain: the next loss starts the backoff over.
STABLE_S = 60.0


class Reacquirer:
    """An engine's re-acquisition of realtime after losses to someone else.

    Parameters
    ----------
    policy : str
        One of :data:`POLICIES`.
    acquire : callable
        Asks for realtime again for the engine's threads; returns the mixer's grant (None
        when the engine no longer runs).
    regained : callable
        Called with the grant when an attempt made the mixer realtime again (the engine
        posts the ``realtime_regained`` event).

    Notes
    -----
    Made by the engine.  Any thread may call the methods.
    """

    def __init__(self, policy: str, acquire: Callable[[], RealtimeGrant | None],
                 regained: Callable[[RealtimeGrant], None]) -> None:
        if policy not in POLICIES:
            raise ValueError(f"reacquire must be one of {POLICIES}, not {policy!r}")
        self.policy = policy
        self._acquire = acquire
        self._regained = regained
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._busy = threading.Lock()  # held while an attempt runs
        self._closed = False
        self._delay = FIRST_DELAY_S
        self._regained_at: float | None = None
        self._losses = 0
        self._attempts = 0
        self._regains = 0
        self._last: RealtimeGrant | None = None

    def lost(self) -> None:
        """The watchdog saw the mixer lose realtime to someone else: plan the attempts."""
        with self._lock:
            self._losses += 1
            if self._closed or self.policy == "never":
                return
            if self._timer is not None:  # attempts already planned: they go on
                return
            now = time.monotonic()
            if self._regained_at is not None and now - self._regained_at < STABLE_S:
                self._delay = min(self._delay * 2, MAX_DELAY_S)  # lost again soon: slower
            else:
                self._delay = FIRST_DELAY_S
            self._plan(self._delay)

    def _plan(self, delay: float) -> None:
        """Start the timer for the next attempt (lock held)."""
        timer = threading.Timer(delay, self._attempt)
        timer.daemon = True
        timer.name = "streamcore-reacquire"
        self._timer = timer
        timer.start()

    def _attempt(self) -> None:
        with self._busy:
            with self._lock:
                if self._closed:
                    return
                self._attempts += 1
            try:
                grant = self._acquire()
            except StreamcoreError:  # the engine closed or stopped meanwhile
                grant = None
            with self._lock:
                self._timer = None
                self._last = grant
                if grant is None or self._closed:
                    return
                if grant.realtime:
                    self._regains += 1
                    self._regained_at = time.monotonic()
                elif self.policy == "backoff":
                    self._delay = min(self._delay * 2, MAX_DELAY_S)
                    self._plan(self._delay)
            if grant.realtime:
                self._regained(grant)

    def stats(self) -> dict[str, Any]:
        """What re-acquisition did so far.

        Returns
        -------
        dict
            ``policy``, ``losses`` (seen), ``attempts``, ``regained`` (attempts that made
            the mixer realtime again), ``pending`` (an attempt is planned), ``next_delay_s``
            and ``last`` (the last attempt's method and the reasons of the steps that
            failed, or None).
        """
        with self._lock:
            last = None
            if self._last is not None:
                last = {"method": self._last.method, "reasons": list(self._last.reasons)}
            return {"policy": self.policy, "losses": self._losses, "attempts": self._attempts,
                    "regained": self._regains, "pending": self._timer is not None,
                    "next_delay_s": self._delay, "last": last}

    def close(self) -> None:
        """Cancel a planned attempt and wait for one in progress; idempotent."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        with self._busy:  # an attempt in progress ends (it sees _closed)
            pass
