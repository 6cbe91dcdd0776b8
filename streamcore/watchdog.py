"""The engine's watchdog: its configuration, its events, and its decision rule on data.

The watchdog itself is a C thread (native/watchdog.c) at a realtime priority above the
mixer, with a SCHED_OTHER canary thread beside it.  It demotes to SCHED_OTHER:

- every realtime thread of the engine when the canary has not run for ``canary_ms``
  (realtime threads starve the machine);
- the mixer when ``overruns_in_row`` cycles in a row each took longer than ``budget`` x the
  period, or one cycle ran longer than ``hard_limit_periods`` periods (also caught while that
  cycle is still running), if the mixer is realtime at that moment (a SCHED_OTHER mixer, not
  promoted yet or demoted by someone else, is only being preempted: nothing to demote).  Both
  limits are per period rendered: a cycle that renders k periods at once (a pipe's reader
  took k) may take k times as long, since it still renders faster than they play;
- the mixer on SIGXCPU, which the kernel sends at the soft RLIMIT_RTTIME, before its SIGKILL at
  the hard limit.

Each demotion is an :class:`Event` and sets taints.  Nothing re-promotes by itself:
``Engine.repromote()`` does, and refuses within ``cooldown`` seconds of the last demotion.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib

__all__ = ["REASONS", "Event", "Watchdog", "WatchdogLogic"]

REASONS = {
    _lib.SC_DEMOTE_OVERRUNS: "overruns",
    _lib.SC_DEMOTE_HARD_LIMIT: "hard_limit",
    _lib.SC_DEMOTE_CANARY: "canary",
    _lib.SC_DEMOTE_RTTIME: "rttime",
    _lib.SC_DEMOTE_OUTSIDE: "lost_realtime",  # not ours: reported, not done
}


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__}")
    return float(value)


def _positive_finite(name: str, value: Any) -> None:
    number = _number(name, value)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name} must be a positive finite number, not {value!r}")


@dataclass(frozen=True)
class Watchdog:
    """Watchdog settings for an :class:`~streamcore.Engine` (``enabled=False``: none).

    Parameters
    ----------
    budget : float
        Fraction of the period (> 0) one mixer cycle may take, per period it renders.
    overruns_in_row : int
        Over-budget cycles in a row (>= 1) that demote the mixer.
    hard_limit_periods : float
        One cycle this many periods long (> 0) per period it renders demotes the mixer, even
        while it still runs.
    canary_ms : float
        Milliseconds (> 0) the SCHED_OTHER canary thread may go without running before every
        realtime thread of the engine is demoted.
    cooldown : float
        Seconds (>= 0) after a demotion during which ``Engine.repromote()`` refuses.
    interval_ms : float or None
        How often the watchdog looks, in milliseconds (> 0); None: one period, kept within
        1 .. 5 ms.  On the timer clock (null sink) it is rounded up to whole periods and
        every look falls half a period after a mixer wake-up, so the watchdog (above the
        mixer) never delays one.
    enabled : bool
        False: the engine runs no watchdog.

    Raises
    ------
    TypeError
        A setting is not a number.
    ValueError
        A setting is out of the range above (or not finite where a finite one is needed).

    Notes
    -----
    A frozen value, read once when the engine is built; the watchdog itself is a C thread at
    one realtime priority above the mixer.
    """

    budget: float = 0.8               #: fraction of the period a cycle may take
    overruns_in_row: int = 8          #: over-budget cycles in a row that demote
    hard_limit_periods: float = 4.0   #: one cycle this many periods long demotes
    canary_ms: float = 200.0          #: canary silence that demotes every RT thread
    cooldown: float = 5.0             #: seconds after a demotion when repromote() refuses
    interval_ms: float | None = None  #: how often it looks (default: a period, 1..5 ms)
    enabled: bool = True

    def __post_init__(self) -> None:
        for name in ("budget", "hard_limit_periods", "canary_ms"):
            _positive_finite(name, getattr(self, name))
        if self.interval_ms is not None:
            _positive_finite("interval_ms", self.interval_ms)
        cooldown = _number("cooldown", self.cooldown)
        if not cooldown >= 0:  # infinite is allowed: never re-promote
            raise ValueError(f"cooldown must be >= 0 seconds, not {self.cooldown!r}")
        if (isinstance(self.overruns_in_row, bool) or not isinstance(self.overruns_in_row, int)
                or not 1 <= self.overruns_in_row <= 2**31 - 1):
            raise ValueError(f"overruns_in_row must be an int within 1..2**31-1, not "
                             f"{self.overruns_in_row!r}")

    def _fill(self, config: Any, period_ns: int) -> None:
        """Write these settings into an ``sc_engine_config``."""
        config.watchdog = 1 if self.enabled else 0
        config.overruns_in_row = self.overruns_in_row
        config.budget_ns = max(1, int(self.budget * period_ns))
        config.hard_limit_ns = max(1, int(self.hard_limit_periods * period_ns))
        config.canary_ns = int(self.canary_ms * 1e6)
        if self.interval_ms is not None:
            config.watchdog_interval_ns = int(self.interval_ms * 1e6)
        else:
            config.watchdog_interval_ns = min(max(period_ns, 1_000_000), 5_000_000)


@dataclass(frozen=True)
class Event:
    """One event of an engine: a demotion by the watchdog, or what it or Python saw."""

    time_ns: int          #: CLOCK_MONOTONIC (time.monotonic_ns())
    #: the watchdog's demotions: "overruns", "hard_limit", "canary", "rttime"; what it saw:
    #: "lost_realtime" (someone else took the mixer's realtime); made in Python, with a
    #: ``detail``: "sink_failed", "producer_died", "realtime_regained"
    reason: str
    tid: int              #: the demoted thread (the mixer)
    threads: int          #: threads demoted (the canary rule demotes every RT thread)
    policy_before: int    #: the mixer's policy before (os.SCHED_*)
    busy_ns: int          #: how long the mixer's current cycle had been running
    streak: int           #: over-budget cycles in a row
    canary_age_ns: int    #: time since the canary last ran
    cycle: int            #: the mixer's cycle count
    result: int           #: 0, or -errno of the demotion; for "lost_realtime": the policy now
    #: for "sink_failed" and "producer_died": why; for "realtime_regained": the grant
    detail: str = ""

    @classmethod
    def made_here(cls, reason: str, detail: str, tid: int = 0, threads: int = 0) -> Event:
        """An event made in Python (a sink failed, a producer died, realtime regained): now,
        with ``detail``, the watchdog's fields zero."""
        return cls(time_ns=time.monotonic_ns(), reason=reason, tid=tid, threads=threads,
                   policy_before=0, busy_ns=0, streak=0, canary_age_ns=0, cycle=0, result=0,
                   detail=detail)

    @classmethod
    def _from_native(cls, ev: Any) -> Event:
        return cls(time_ns=ev.time_ns, reason=REASONS.get(ev.reason, str(ev.reason)),
                   tid=ev.tid, threads=ev.threads, policy_before=ev.policy_before,
                   busy_ns=ev.busy_ns, streak=ev.streak, canary_age_ns=ev.canary_age_ns,
                   cycle=ev.cycle, result=ev.result)


class WatchdogLogic:
    """The native decision rule (``sc_watchdog_decide``) driven by hand, for tests and what-ifs.

    Not thread-safe; the engine's watchdog thread has its own.
    """

    def __init__(self, watchdog: Watchdog, period_ns: int) -> None:
        self._config = _ffi.new("sc_engine_config *")  # kept alive: decide() reads it
        watchdog._fill(self._config, period_ns)
        self._state = _ffi.new("sc_watchdog_state *")
        self._input = _ffi.new("sc_watchdog_input *")

    def decide(self, now_ns: int, busy_since_ns: int = 0, canary_ns: int = 0, streak: int = 0,
               sigxcpu: int = 0, hard_overruns: int = 0,
               mixer_realtime: bool = True, cycle_periods: int = 1) -> str | None:
        """The reason to demote at ``now_ns`` given what the watchdog sees, or None
        (``mixer_realtime``: whether the mixer runs a realtime policy now; the cycle rules,
        hard limit and overruns, apply only then; ``cycle_periods``: the periods the running
        cycle renders, which scale the hard limit)."""
        i = self._input
        i.now_ns, i.busy_since_ns, i.canary_ns = now_ns, busy_since_ns, canary_ns
        i.streak, i.sigxcpu, i.hard_overruns = streak, sigxcpu, hard_overruns
        i.mixer_realtime, i.cycle_periods = int(mixer_realtime), cycle_periods
        return REASONS.get(_lib.sc_watchdog_decide(self._config, self._state, i))

    def rearm(self) -> None:
        """What a re-promotion does: demotions may happen again."""
        self._state.mixer_demoted = 0
        self._state.canary_tripped = 0
