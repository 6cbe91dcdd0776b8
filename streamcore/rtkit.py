"""RealtimeKit (org.freedesktop.RealtimeKit1) over the system bus: limits and requests.

rtkit grants SCHED_RR (with SCHED_RESET_ON_FORK) or a negative nice level to threads of
unprivileged processes, after checks that are easy to fail without knowing them: the caller's
hard RLIMIT_RTTIME must be a number no larger than ``RTTimeUSecMax`` ("unlimited" is refused),
the priority no higher than ``MaxRealtimePriority``, polkit must allow the caller (by default
only a process in an active login session), and a burst limit must not be exceeded.
:func:`explain` turns rtkit's terse AccessDenied into the likely cause and its fix.

Every function takes a ``timeout``: with no bus, no rtkit, or a hung daemon it raises
:class:`~streamcore.bus.BusError` within that time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jeepney import DBusAddress, new_method_call

from streamcore.bus import BusConnection, BusError

__all__ = [
    "RTKIT",
    "RtkitLimits",
    "explain",
    "make_thread_high_priority",
    "make_thread_realtime",
    "read_limits",
]

RTKIT = DBusAddress(
    "/org/freedesktop/RealtimeKit1",
    bus_name="org.freedesktop.RealtimeKit1",
    interface="org.freedesktop.RealtimeKit1",
)


@dataclass(frozen=True)
class RtkitLimits:
    """The three limits rtkit publishes as properties."""

    max_realtime_priority: int
    """Highest SCHED_RR priority rtkit grants."""
    min_nice_level: int
    """Lowest (most favourable) nice level rtkit grants."""
    rttime_usec_max: int
    """Largest hard RLIMIT_RTTIME (µs) rtkit accepts from a caller."""

    def problems(self) -> list[str]:
        """Why these limits cannot be used, if they cannot (0 or negative values)."""
        out = []
        if self.max_realtime_priority <= 0:
            out.append(f"MaxRealtimePriority is {self.max_realtime_priority}")
        if self.rttime_usec_max <= 0:
            out.append(f"RTTimeUSecMax is {self.rttime_usec_max}")
        return out


def read_limits(timeout: float = 2.0, bus: BusConnection | None = None) -> RtkitLimits:
    """Read MaxRealtimePriority, MinNiceLevel and RTTimeUSecMax from the running rtkit."""
    if bus is None:
        with BusConnection(timeout) as own:
            return read_limits(timeout, own)
    return RtkitLimits(
        max_realtime_priority=int(bus.get_property(RTKIT, "MaxRealtimePriority")),
        min_nice_level=int(bus.get_property(RTKIT, "MinNiceLevel")),
        rttime_usec_max=int(bus.get_property(RTKIT, "RTTimeUSecMax")),
    )


def _call_with_pid_fallback(bus: BusConnection, method: str, signature: str,
                            pid: int, tid: int, value: int) -> None:
    """Call ``{method}WithPID(pid, tid, value)``; an rtkit too old for it gets ``{method}``."""
    try:
        bus.call(new_method_call(RTKIT, method + "WithPID", "tt" + signature, (pid, tid, value)))
    except BusError as e:
        if e.name != "org.freedesktop.DBus.Error.UnknownMethod" or pid != os.getpid():
            raise
        bus.call(new_method_call(RTKIT, method, "t" + signature, (tid, value)))


def make_thread_realtime(tid: int, priority: int, *, pid: int | None = None,
                         timeout: float = 2.0, bus: BusConnection | None = None) -> None:
    """Ask rtkit to make thread ``tid`` of ``pid`` (default: this process) SCHED_RR at
    ``priority``.  The caller sets a finite hard RLIMIT_RTTIME first."""
    if bus is None:
        with BusConnection(timeout) as own:
            return make_thread_realtime(tid, priority, pid=pid, timeout=timeout, bus=own)
    _call_with_pid_fallback(bus, "MakeThreadRealtime", "u", pid or os.getpid(), tid, priority)
    return None


def make_thread_high_priority(tid: int, nice: int, *, pid: int | None = None,
                              timeout: float = 2.0, bus: BusConnection | None = None) -> None:
    """Ask rtkit to give thread ``tid`` of ``pid`` (default: this process) nice ``nice``."""
    if bus is None:
        with BusConnection(timeout) as own:
            return make_thread_high_priority(tid, nice, pid=pid, timeout=timeout, bus=own)
    _call_with_pid_fallback(bus, "MakeThreadHighPriority", "i", pid or os.getpid(), tid, nice)
    return None


def explain(error: BusError, *, priority: int | None = None,
            limits: RtkitLimits | None = None, rttime_hard_us: int | None = None) -> str:
    """One sentence: what an rtkit failure most likely means and how to fix it."""
    name = error.name
    if name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                "org.freedesktop.DBus.Error.NameHasNoOwner"):
        return ("rtkit is not running or not installed (no owner of org.freedesktop.RealtimeKit1 "
                "on the system bus): install the 'rtkit' package and start rtkit-daemon")
    if name == "streamcore.NoBus":
        return f"no system bus to ask rtkit: {error.args[1]} (is dbus-daemon running?)"
    if name == "streamcore.Timeout" or error.errno == 110:
        return (f"the system bus or rtkit did not answer in time ({error.args[1]}); "
                "a hung rtkit-daemon or polkitd is the usual cause")
    if name == "org.freedesktop.DBus.Error.AccessDenied":
        causes = []
        if rttime_hard_us is None:
            causes.append("RLIMIT_RTTIME is unlimited (rtkit requires a finite hard limit)")
        elif limits is not None and rttime_hard_us > limits.rttime_usec_max:
            causes.append(f"the hard RLIMIT_RTTIME {rttime_hard_us} µs exceeds rtkit's "
                          f"RTTimeUSecMax {limits.rttime_usec_max} µs")
        if limits is not None and priority is not None \
                and priority > limits.max_realtime_priority:
            causes.append(f"priority {priority} exceeds rtkit's MaxRealtimePriority "
                          f"{limits.max_realtime_priority}")
        if not causes:
            causes.append(
                "polkit refused (rtkit's default allows only active local sessions: add a "
                "polkit rule for org.freedesktop.RealtimeKit1.acquire-real-time), or rtkit's "
                "per-user burst/thread limits were hit, or rtkit refuses requests for 5 minutes "
                "after its canary watchdog fired")
        return "rtkit refused: " + "; or ".join(causes)
    return f"rtkit failed: {error}"
