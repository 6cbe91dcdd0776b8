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

import errno
import os
from dataclasses import dataclass

from jeepney import DBusAddress, new_method_call

from streamcore.bus import BusConnection, BusError

__all__ = [
    "MISSING_PROPERTY",
    "POLKIT_ACTION_HIGH_PRIORITY",
    "POLKIT_ACTION_REALTIME",
    "RTKIT",
    "PolkitAnswer",
    "RtkitLimits",
    "explain",
    "make_thread_high_priority",
    "make_thread_realtime",
    "polkit_check",
    "read_limits",
]

RTKIT = DBusAddress(
    "/org/freedesktop/RealtimeKit1",
    bus_name="org.freedesktop.RealtimeKit1",
    interface="org.freedesktop.RealtimeKit1",
)


POLKIT = DBusAddress(
    "/org/freedesktop/PolicyKit1/Authority",
    bus_name="org.freedesktop.PolicyKit1",
    interface="org.freedesktop.PolicyKit1.Authority",
)
POLKIT_ACTION_REALTIME = "org.freedesktop.RealtimeKit1.acquire-real-time"
POLKIT_ACTION_HIGH_PRIORITY = "org.freedesktop.RealtimeKit1.acquire-high-priority"

# Answers that mean "this daemon has no such property" rather than "no daemon".
MISSING_PROPERTY = frozenset({
    "org.freedesktop.DBus.Error.UnknownProperty",
    "org.freedesktop.DBus.Error.InvalidArgs",
    "org.freedesktop.DBus.Error.UnknownInterface",
})


@dataclass(frozen=True)
class RtkitLimits:
    """The three limits rtkit publishes as properties (None: the daemon lacks the property)."""

    max_realtime_priority: int | None
    """Highest SCHED_RR priority rtkit grants."""
    min_nice_level: int | None
    """Lowest (most favourable) nice level rtkit grants."""
    rttime_usec_max: int | None
    """Largest hard RLIMIT_RTTIME (µs) rtkit accepts from a caller."""

    def problems(self) -> list[str]:
        """Why these limits cannot be used for a realtime request (missing, 0 or negative)."""
        out = []
        for name, value in (("MaxRealtimePriority", self.max_realtime_priority),
                            ("RTTimeUSecMax", self.rttime_usec_max)):
            if value is None:
                out.append(f"{name} is missing")
            elif value <= 0:
                out.append(f"{name} is {value}")
        return out


def _optional_int(bus: BusConnection, name: str) -> int | None:
    try:
        return int(bus.get_property(RTKIT, name))
    except BusError as e:
        if e.name in MISSING_PROPERTY:
            return None
        raise


def read_limits(timeout: float = 2.0, bus: BusConnection | None = None) -> RtkitLimits:
    """Read MaxRealtimePriority, MinNiceLevel and RTTimeUSecMax from the running rtkit.

    A property the daemon lacks is None (see :meth:`RtkitLimits.problems`); no bus or no
    rtkit raises BusError.
    """
    if bus is None:
        with BusConnection(timeout) as own:
            return read_limits(timeout, own)
    return RtkitLimits(
        max_realtime_priority=_optional_int(bus, "MaxRealtimePriority"),
        min_nice_level=_optional_int(bus, "MinNiceLevel"),
        rttime_usec_max=_optional_int(bus, "RTTimeUSecMax"),
    )


@dataclass(frozen=True)
class PolkitAnswer:
    """polkit's answer for one action and this process (CheckAuthorization, no interaction)."""

    action: str
    authorized: bool
    challenge: bool
    """Not authorized now, but would be after authentication (an agent asks a password)."""

    def __str__(self) -> str:
        verdict = "allows" if self.authorized else \
            "would ask for authentication" if self.challenge else "refuses"
        return f"polkit {verdict} {self.action} for this process"


def _start_time() -> int:
    """This process's start time in clock ticks (field 22 of /proc/self/stat), as polkit
    identifies a unix-process subject."""
    with open("/proc/self/stat") as stat:
        text = stat.read()
    return int(text[text.rindex(")") + 2:].split()[19])


def polkit_check(action: str, timeout: float = 2.0,
                 bus: BusConnection | None = None) -> PolkitAnswer:
    """Ask polkit whether this process is authorized for ``action`` (no interaction).

    This is the question rtkit asks polkit about us; raises BusError when polkit does not
    answer (ServiceUnknown: polkitd not running).
    """
    if bus is None:
        with BusConnection(timeout) as own:
            return polkit_check(action, timeout, own)
    subject = ("unix-process", {"pid": ("u", os.getpid()), "start-time": ("t", _start_time()),
                                "uid": ("i", os.getuid())})
    message = new_method_call(POLKIT, "CheckAuthorization", "(sa{sv})sa{ss}us",
                              (subject, action, {}, 0, ""))
    ((authorized, challenge, _details),) = bus.call(message)
    return PolkitAnswer(action, bool(authorized), bool(challenge))


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
                         timeout: float = 2.0, bus: BusConnection | None = None,
                         main_thread_form: bool = False) -> None:
    """Ask rtkit to make thread ``tid`` of ``pid`` (default: this process) SCHED_RR at
    ``priority``; ``main_thread_form``: ``MakeThreadRealtime(0, priority)``, the caller's
    main thread as the bus knows it (what works from a PID namespace).  The caller sets a
    finite hard RLIMIT_RTTIME first."""
    if bus is None:
        with BusConnection(timeout) as own:
            return make_thread_realtime(tid, priority, pid=pid, timeout=timeout, bus=own,
                                        main_thread_form=main_thread_form)
    if main_thread_form:
        bus.call(new_method_call(RTKIT, "MakeThreadRealtime", "tu", (0, priority)))
        return None
    _call_with_pid_fallback(bus, "MakeThreadRealtime", "u", pid or os.getpid(), tid, priority)
    return None


def make_thread_high_priority(tid: int, nice: int, *, pid: int | None = None,
                              timeout: float = 2.0, bus: BusConnection | None = None,
                              main_thread_form: bool = False) -> None:
    """Ask rtkit to give thread ``tid`` of ``pid`` (default: this process) nice ``nice``
    (``main_thread_form``: as for :func:`make_thread_realtime`)."""
    if bus is None:
        with BusConnection(timeout) as own:
            return make_thread_high_priority(tid, nice, pid=pid, timeout=timeout, bus=own,
                                             main_thread_form=main_thread_form)
    if main_thread_form:
        bus.call(new_method_call(RTKIT, "MakeThreadHighPriority", "ti", (0, nice)))
        return None
    _call_with_pid_fallback(bus, "MakeThreadHighPriority", "i", pid or os.getpid(), tid, nice)
    return None


def explain(error: BusError, *, priority: int | None = None,
            limits: RtkitLimits | None = None, rttime_hard_us: int | None = None,
            budget: tuple[str, int] | None = None, polkit: PolkitAnswer | None = None) -> str:
    """One sentence: what an rtkit failure most likely means and how to fix it.

    The more is known (the priority asked, rtkit's limits, the hard RLIMIT_RTTIME in effect,
    the cgroup's RT budget, polkit's own answer), the fewer causes remain to name.
    """
    name = error.name
    if name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                "org.freedesktop.DBus.Error.NameHasNoOwner"):
        return ("rtkit is not running or not installed (no owner of org.freedesktop.RealtimeKit1 "
                "on the system bus): install the 'rtkit' package and start rtkit-daemon")
    if name == "streamcore.NoBus":
        return f"no system bus to ask rtkit: {error.args[1]} (is dbus-daemon running?)"
    if name == "streamcore.Timeout" or error.errno == errno.ETIMEDOUT:
        return (f"the system bus or rtkit did not answer in time ({error.args[1]}); "
                "a hung rtkit-daemon or polkitd is the usual cause")
    if name == "org.freedesktop.DBus.Error.AccessDenied":
        causes = []
        if rttime_hard_us is None:
            causes.append("RLIMIT_RTTIME is unlimited (rtkit requires a finite hard limit)")
        elif limits is not None and limits.rttime_usec_max is not None \
                and rttime_hard_us > limits.rttime_usec_max:
            causes.append(f"the hard RLIMIT_RTTIME {rttime_hard_us} µs exceeds rtkit's "
                          f"RTTimeUSecMax {limits.rttime_usec_max} µs")
        if limits is not None and priority is not None \
                and limits.max_realtime_priority is not None \
                and priority > limits.max_realtime_priority:
            causes.append(f"priority {priority} exceeds rtkit's MaxRealtimePriority "
                          f"{limits.max_realtime_priority}")
        if budget is not None and budget[1] == 0:
            causes.append(f"RT group scheduling gives this cgroup no realtime budget "
                          f"({budget[0]} is 0): write e.g. 950000 there")
        if not causes and polkit is not None and not polkit.authorized:
            how = "would ask for a password, and rtkit does not let it" if polkit.challenge \
                else "said no"
            causes.append(
                f"polkit refused: asked about {polkit.action} for this process it {how}; "
                "rtkit's default allows only active local login sessions: add a polkit rule "
                "(/etc/polkit-1/rules.d) that returns YES for this user or group")
        elif not causes and polkit is not None:
            causes.append(
                "polkit allows this process, so rtkit's own limits refused: its per-user "
                "burst limit (25 requests per 20 s) or thread limit, or it refuses every "
                "request for 5 minutes after its canary watchdog fired (after a suspend or "
                "a starving realtime thread): wait, or restart rtkit-daemon")
        if not causes:
            causes.append(
                "polkit refused (rtkit's default allows only active local sessions: add a "
                "polkit rule for org.freedesktop.RealtimeKit1.acquire-real-time), or rtkit's "
                "per-user burst/thread limits were hit, or rtkit refuses requests for 5 minutes "
                "after its canary watchdog fired")
        return "rtkit refused: " + "; or ".join(causes)
    if name == "org.freedesktop.DBus.Error.Failed":
        return (f"rtkit could not act on the thread ({error.args[1]}): it exited, or this "
                "process runs in its own PID namespace (a container or sandbox) so its thread "
                "ids mean nothing to rtkit: use the realtime portal or run rtkit inside")
    if name == "org.freedesktop.DBus.Error.UnknownMethod":
        return f"this rtkit lacks the method ({error.args[1]}): update rtkit"
    return f"rtkit failed: {error}"
