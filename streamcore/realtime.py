"""Realtime scheduling for any thread of this process: acquire, read back, demote.

:func:`acquire_realtime` walks a fallback chain and stops at the first step that the kernel
confirms (every result is read back from the kernel, never assumed):

1. ``direct``: ``sched_setscheduler(tid, policy | SCHED_RESET_ON_FORK, priority)``; on EPERM
   with a non-zero RLIMIT_RTPRIO, once more clamped to it.
2. ``rtkit`` and ``portal``, in the order PipeWire's module-rt uses: a sandboxed process (a
   Flatpak's /.flatpak-info, or a PID namespace: the system bus sees another pid than ours)
   asks the XDG desktop portal on the session bus first (``DBUS_SESSION_BUS_ADDRESS``, else
   ``$XDG_RUNTIME_DIR/bus``), then RealtimeKit on the system bus (``DBUS_SYSTEM_BUS_ADDRESS``
   is honoured); any other process asks rtkit, and the portal only when rtkit cannot be
   reached.  Either way the service's three limits are read, RLIMIT_RTTIME is set within
   ``RTTimeUSecMax`` (hard) and at 0.8 x that (soft), the priority is clamped, then
   ``MakeThreadRealtimeWithPID`` (the portal maps a Flatpak's ids and forwards to rtkit).
   rtkit always grants SCHED_RR.  In a PID namespace rtkit gets the host's ids where /proc
   shows them (:mod:`streamcore.pidns`).
3. ``portal-nice`` / ``rtkit-nice`` / ``nice``: a negative nice level from the same services
   in the same order (clamped to ``MinNiceLevel``), else from ``setpriority`` directly.
4. ``none``: normal scheduling.

Each failed step leaves one line in :attr:`RealtimeGrant.reasons` saying why, in words a person
can act on; a partial result is never silent.  Every bus step (both buses) shares one deadline,
``timeout``: no bus, no rtkit, a hung rtkit, polkit or portal cost at most that long.

The decisions (clamping, which RLIMIT_RTTIME to set, what an errno means) are plain functions
on data (:func:`direct_retry`, :func:`rttime_limits`, :func:`clamp_priority`,
:func:`clamp_nice`, :func:`nice_retry`, :func:`explain_direct_failure`, :func:`parse_cgroups`);
the functions that touch the kernel or the bus are thin around them.

Concurrency: any Python thread may call these functions about any thread of this process (by
kernel tid).  They block on the bus for up to ``timeout``: never call them from a thread whose
deadlines matter.  The rtkit path changes the *process's* RLIMIT_RTTIME (a per-process limit)
and leaves it lowered even when rtkit then refuses (a hard limit cannot be raised back without
privileges).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import resource
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from streamcore import _facts
from streamcore import pidns as _pidns
from streamcore import portal as _portal
from streamcore import rtkit as _rtkit
from streamcore.bus import BusConnection, BusError

__all__ = [
    "POLICIES",
    "ProbeThread",
    "RealtimeGrant",
    "Scheduling",
    "acquire_realtime",
    "clamp_nice",
    "clamp_priority",
    "current_scheduling",
    "demote",
    "direct_retry",
    "explain_direct_failure",
    "nice_retry",
    "parse_cgroups",
    "rt_budget",
    "rttime_limits",
    "sandbox_reason",
]

POLICIES = {"fifo": os.SCHED_FIFO, "rr": os.SCHED_RR}
"""The realtime policies :func:`acquire_realtime` accepts, by name."""

_POLICY_NAMES = {
    os.SCHED_OTHER: "other",
    os.SCHED_FIFO: "fifo",
    os.SCHED_RR: "rr",
    os.SCHED_BATCH: "batch",
    os.SCHED_IDLE: "idle",
    6: "deadline",  # SCHED_DEADLINE: os has no constant for it
}
_KERNEL_NAMES = {"other": "SCHED_OTHER", "fifo": "SCHED_FIFO", "rr": "SCHED_RR",
                 "batch": "SCHED_BATCH", "idle": "SCHED_IDLE", "deadline": "SCHED_DEADLINE"}
_RESET = os.SCHED_RESET_ON_FORK


def _errno_name(code: int | None) -> str:
    return _errno.errorcode.get(code or 0, str(code))


# ---- what a thread's scheduling is ------------------------------------------------------


@dataclass(frozen=True)
class Scheduling:
    """How one thread is scheduled, as the kernel reports it.

    Parameters
    ----------
    tid : int
        The kernel thread id.
    policy : str
        The policy's short name ('other', 'fifo', 'rr', ...).
    priority : int
        The realtime priority (sched_priority).
    nice : int
        The nice level.
    reset_on_fork : bool
        SCHED_RESET_ON_FORK is set.

    Notes
    -----
    Made by :func:`current_scheduling` and :func:`demote`; a frozen value, safe to share
    between threads.
    """

    tid: int
    """The kernel thread id (0 for a forked child that has exited, see ProbeThread)."""
    policy: str
    """'other', 'fifo', 'rr', 'batch', 'idle' or 'deadline'."""
    priority: int
    """sched_priority: 1..99 for 'fifo'/'rr', 0 otherwise."""
    nice: int
    """The thread's nice level (-20..19); matters for the normal policies only."""
    reset_on_fork: bool
    """SCHED_RESET_ON_FORK is set: a child forked by this thread starts SCHED_OTHER, nice >= 0."""

    @property
    def realtime(self) -> bool:
        """True when the policy is a realtime one (SCHED_FIFO or SCHED_RR)."""
        return self.policy in ("fifo", "rr")

    def __str__(self) -> str:
        text = _KERNEL_NAMES.get(self.policy, self.policy)
        text += f" priority {self.priority}" if self.realtime else f" nice {self.nice}"
        return text + (", reset-on-fork" if self.reset_on_fork else ", NO reset-on-fork")

    @classmethod
    def _from_kernel(cls, tid: int, policy: int, priority: int, nice: int) -> Scheduling:
        base = policy & ~_RESET
        return cls(tid, _POLICY_NAMES.get(base, str(base)), priority, nice,
                   bool(policy & _RESET))


def _own_tid(tid: int | None) -> int:
    """``tid`` checked to be a thread of this process; None is the calling thread."""
    if tid is None:
        return threading.get_native_id()
    if isinstance(tid, bool) or not isinstance(tid, int) or tid <= 0:
        raise ValueError(f"tid must be a positive kernel thread id, not {tid!r}")
    if not _pidns.nspid(tid):  # found by its id here, also where /proc is an outer one's
        raise ValueError(f"tid {tid} is not a thread of this process (pid {os.getpid()})")
    return tid


def current_scheduling(tid: int | None = None) -> Scheduling:
    """The scheduling of thread ``tid`` (default: the calling thread), read from the kernel.

    Use it to notice a demotion from outside (rtkit's canary, suspend/resume, our watchdog)
    and re-request with :func:`acquire_realtime`.

    Parameters
    ----------
    tid : int or None
        A kernel thread id of this process (``threading.get_native_id()``,
        ``Engine.mixer_tid``); None: the calling thread.

    Returns
    -------
    Scheduling
        Policy, priority, nice level and SCHED_RESET_ON_FORK of the thread.

    Raises
    ------
    ValueError
        ``tid`` is not (or no longer) a thread of this process.
    ProcessLookupError
        The thread exited during the call.

    Notes
    -----
    Any thread, about any thread of this process; a few syscalls, no bus traffic.
    """
    tid = _own_tid(tid)
    policy = os.sched_getscheduler(tid)
    priority = os.sched_getparam(tid).sched_priority
    nice = os.getpriority(os.PRIO_PROCESS, tid)  # PRIO_PROCESS with a tid: that thread only
    return Scheduling._from_kernel(tid, policy, priority, nice)


def demote(tid: int | None = None) -> Scheduling:
    """Put thread ``tid`` back to SCHED_OTHER, keeping SCHED_RESET_ON_FORK, at nice >= 0.

    A negative nice is undone (back to 0, as rtkit's canary does).  Any user may do this to
    its own threads (the kernel refuses to *clear* RESET_ON_FORK without CAP_SYS_NICE, which
    is why it is kept).  The opposite of :func:`acquire_realtime`.

    Parameters
    ----------
    tid : int or None
        A kernel thread id of this process; None: the calling thread.

    Returns
    -------
    Scheduling
        The thread's scheduling read back after the change.

    Raises
    ------
    ValueError
        ``tid`` is not (or no longer) a thread of this process.
    ProcessLookupError
        The thread exited during the call.

    Notes
    -----
    Any thread, about any thread of this process; no bus traffic.
    """
    tid = _own_tid(tid)
    os.sched_setscheduler(tid, os.SCHED_OTHER | _RESET, os.sched_param(0))
    if os.getpriority(os.PRIO_PROCESS, tid) < 0:
        os.setpriority(os.PRIO_PROCESS, tid, 0)
    return current_scheduling(tid)


# ---- the decisions, on data alone -------------------------------------------------------


def direct_retry(priority: int, rtprio_soft: int | None,
                 rtprio_hard: int | None) -> tuple[int, int | None] | None:
    """After ``sched_setscheduler`` answered EPERM: ``(priority to retry at, soft
    RLIMIT_RTPRIO to set first or None)``, or None when no retry can succeed.

    The kernel lets a process without CAP_SYS_NICE use realtime priorities up to its soft
    RLIMIT_RTPRIO, and the soft limit may be raised up to the hard one without privileges.
    ``None`` limits are "unlimited": refused although unlimited is not a limit problem.
    """
    if rtprio_hard is None or rtprio_hard <= 0:
        return None
    retry = min(priority, rtprio_hard)
    new_soft = None if rtprio_soft is None or rtprio_soft >= retry else retry
    if retry == priority and new_soft is None:
        return None  # asked within the limit and still refused: the limit is not the cause
    return retry, new_soft


def rttime_limits(soft: int | None, hard: int | None, rttime_usec_max: int) -> tuple[int, int]:
    """The ``(soft, hard)`` RLIMIT_RTTIME (µs) to set before asking rtkit.

    rtkit refuses a caller whose hard limit is unlimited or above ``RTTimeUSecMax``.  The hard
    limit becomes ``RTTimeUSecMax``, or stays at an existing lower one (never raised); the
    soft limit is 0.8 x hard, so SIGXCPU arrives before the kernel's SIGKILL at the hard limit,
    or stays at an existing lower soft limit.  ``None`` means unlimited.
    """
    if rttime_usec_max <= 0:
        raise ValueError(f"RTTimeUSecMax must be positive, not {rttime_usec_max}")
    new_hard = rttime_usec_max if hard is None else min(hard, rttime_usec_max)
    new_soft = new_hard * 4 // 5
    if soft is not None:
        new_soft = min(new_soft, soft)
    return new_soft, new_hard


def clamp_priority(priority: int, maximum: int) -> int:
    """``priority`` lowered to rtkit's MaxRealtimePriority (and at least 1)."""
    return max(1, min(priority, maximum))


def clamp_nice(nice: int, minimum: int) -> int:
    """``nice`` raised to rtkit's MinNiceLevel (the most favourable level it grants)."""
    return max(nice, minimum)


def nice_retry(nice: int, rlimit_nice_soft: int | None) -> int | None:
    """After ``setpriority`` was refused: the nice level RLIMIT_NICE allows instead, or None.

    The kernel allows lowering nice to ``20 - RLIMIT_NICE`` without CAP_SYS_NICE.
    """
    floor = -20 if rlimit_nice_soft is None else 20 - rlimit_nice_soft
    retry = max(nice, floor)
    return retry if retry != nice and retry < 0 else None


def parse_cgroups(proc_self_cgroup: str) -> list[tuple[str, str]]:
    """``(controllers, path)`` pairs of /proc/self/cgroup text; cgroup v2 has controllers ''."""
    out = []
    for line in proc_self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out.append((parts[1], parts[2]))
    return out


def explain_direct_failure(code: int, policy: str, priority: int, *, rtprio_hard: int | None,
                           cap_sys_nice: bool | None,
                           budget: tuple[str, int] | None = None) -> str:
    """Why ``sched_setscheduler`` refused, as one line with the fix.

    ``budget`` is ``(path of cpu.rt_runtime_us, value)`` for this process's cgroup when RT
    group scheduling exists (see :func:`rt_budget`).
    """
    what = f"sched_setscheduler({_KERNEL_NAMES[policy]}, priority {priority}) refused " \
           f"({_errno_name(code)})"
    if budget is not None and budget[1] == 0 and code == _errno.EPERM:
        return (f"{what}: RT group scheduling gives this thread's cgroup no realtime budget "
                f"({budget[0]} is 0; common in containers): write e.g. 950000 there, or run "
                "the container with --cpu-rt-runtime=950000")
    if code == _errno.EPERM and cap_sys_nice:
        return (f"{what} although the process has CAP_SYS_NICE: RT group scheduling without "
                "a budget for this cgroup, or a seccomp/LSM policy, is the likely cause")
    if code == _errno.EPERM:
        if not rtprio_hard:
            return (f"{what}: no CAP_SYS_NICE and RLIMIT_RTPRIO is 0: allow your group "
                    "realtime (e.g. '@audio - rtprio 95' in /etc/security/limits.d/audio.conf, "
                    "then log in again) or use rtkit")
        return (f"{what}: RLIMIT_RTPRIO {rtprio_hard} and no CAP_SYS_NICE: raise the "
                "rtprio limit in /etc/security/limits.d or ask for a lower priority")
    if code == _errno.EINVAL:
        return f"{what}: the priority is out of range for the policy (1..99)"
    if code == _errno.ESRCH:
        return f"{what}: the thread has exited"
    return f"{what}: {os.strerror(code)}"


# ---- facts of this process (I/O; rlimits and capabilities: streamcore._facts) ---------


def rt_budget(tid: int | None = None) -> tuple[str, int] | None:
    """``(path, value)`` of the ``cpu.rt_runtime_us`` of the cgroup of thread ``tid`` (default:
    the process's) when the kernel has RT group scheduling (the file exists), else None.
    0 means: no thread of that cgroup may run realtime, not even root's."""
    source = "/proc/self/cgroup" if tid is None else f"/proc/self/task/{tid}/cgroup"
    try:
        text = Path(source).read_text()
    except OSError:
        return None
    for controllers, path in parse_cgroups(text):
        names = controllers.split(",")
        if controllers and "cpu" not in names:
            continue
        mounts = ["/sys/fs/cgroup"] if not controllers else \
            [f"/sys/fs/cgroup/{controllers}", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"]
        for mount in mounts:
            candidate = Path(mount + path.rstrip("/")) / "cpu.rt_runtime_us"
            try:
                return str(candidate), int(candidate.read_text().strip())
            except (OSError, ValueError):
                continue
    return None


# ---- the grant and the chain ------------------------------------------------------------


@dataclass(frozen=True)
class RealtimeGrant:
    """What :func:`acquire_realtime` obtained, read back from the kernel.

    Parameters
    ----------
    method : str
        The step that worked: 'direct', 'rtkit', 'portal', 'rtkit-nice', 'portal-nice',
        'nice' or 'none'.
    policy : str
        The thread's policy now.
    priority : int
        Its realtime priority now (0 when not realtime).
    nice : int
        Its nice level now.
    rttime_soft_us, rttime_hard_us : int or None
        The process's RLIMIT_RTTIME now, in µs (None: unlimited).
    reset_on_fork : bool
        SCHED_RESET_ON_FORK read back from the kernel.
    reasons : tuple of str
        One line per failed step.
    tid : int
        The kernel thread id the grant is about.
    requested_priority : int
        The priority that was asked for.
    notes : tuple of str
        Adjustments made on the way.

    Notes
    -----
    A frozen value, safe to share between threads; ``str()`` gives one line for logs.
    """

    method: str
    """'direct', 'rtkit', 'portal', 'rtkit-nice', 'portal-nice', 'nice' or 'none'."""
    policy: str
    """The thread's policy now: 'fifo', 'rr', 'other', ..."""
    priority: int
    """Its realtime priority now (0 when not realtime)."""
    nice: int
    """Its nice level now."""
    rttime_soft_us: int | None
    """The process's soft RLIMIT_RTTIME now (µs; None = unlimited): SIGXCPU when an RT thread
    runs this long without blocking."""
    rttime_hard_us: int | None
    """The hard RLIMIT_RTTIME now (µs; None = unlimited): SIGKILL at this point."""
    reset_on_fork: bool
    """SCHED_RESET_ON_FORK read back from the kernel."""
    reasons: tuple[str, ...]
    """One line per failed step: why each better method did not work."""
    tid: int = 0
    requested_priority: int = 0
    notes: tuple[str, ...] = field(default=())
    """Adjustments made on the way (a clamped priority, the RLIMIT_RTTIME set for rtkit)."""

    @property
    def realtime(self) -> bool:
        """True when the thread now runs a realtime policy."""
        return self.policy in ("fifo", "rr")

    def __str__(self) -> str:
        state = "realtime" if self.realtime else "NOT realtime"
        sched = f"{_KERNEL_NAMES.get(self.policy, self.policy)} "
        sched += f"priority {self.priority}" if self.realtime else f"nice {self.nice}"
        rttime = "unlimited" if self.rttime_hard_us is None else \
            f"soft {self.rttime_soft_us} / hard {self.rttime_hard_us} µs"
        line = (f"thread {self.tid}: {state} via {self.method}: {sched}, "
                f"{'reset-on-fork' if self.reset_on_fork else 'NO reset-on-fork'}, "
                f"RLIMIT_RTTIME {rttime}")
        if self.notes:
            line += " (" + "; ".join(self.notes) + ")"
        if self.reasons:
            line += "; failed: " + " | ".join(self.reasons)
        return line


def _grant(method: str, tid: int, requested: int, reasons: list[str],
           notes: list[str]) -> RealtimeGrant:
    now = current_scheduling(tid)
    soft, hard = _facts.rlimit(resource.RLIMIT_RTTIME)
    return RealtimeGrant(method=method, policy=now.policy, priority=now.priority, nice=now.nice,
                         rttime_soft_us=soft, rttime_hard_us=hard,
                         reset_on_fork=now.reset_on_fork, reasons=tuple(reasons), tid=tid,
                         requested_priority=requested, notes=tuple(notes))


def _set_realtime(tid: int, policy: int, priority: int) -> int:
    """0, or the errno of sched_setscheduler."""
    try:
        os.sched_setscheduler(tid, policy | _RESET, os.sched_param(priority))
    except OSError as e:
        return e.errno or _errno.EPERM
    return 0


def _try_direct(tid: int, policy: str, priority: int, reasons: list[str],
                notes: list[str]) -> bool:
    code = _set_realtime(tid, POLICIES[policy], priority)
    if code == 0:
        now = current_scheduling(tid)
        if not now.realtime:
            reasons.append(f"direct: the kernel accepted but the thread reads back as {now}")
        return now.realtime
    rtprio_soft, rtprio_hard = _facts.rlimit(resource.RLIMIT_RTPRIO)
    retry = direct_retry(priority, rtprio_soft, rtprio_hard) if code == _errno.EPERM else None
    if retry is not None:
        clamped, new_soft = retry
        try:
            if new_soft is not None:
                _facts.set_soft_rlimit(resource.RLIMIT_RTPRIO, new_soft)
            retry_code = _set_realtime(tid, POLICIES[policy], clamped)
        except (OSError, ValueError) as e:
            retry_code = getattr(e, "errno", None) or _errno.EPERM
        if retry_code == 0 and current_scheduling(tid).realtime:
            notes.append(f"priority {priority} clamped to RLIMIT_RTPRIO {clamped}")
            return True
    reasons.append("direct: " + explain_direct_failure(
        code, policy, priority, rtprio_hard=rtprio_hard,
        cap_sys_nice=_facts.has_capability("CAP_SYS_NICE"), budget=rt_budget(tid)))
    return False


def _polkit_after(error: BusError, bus: BusConnection | None,
                  action: str) -> _rtkit.PolkitAnswer | None:
    """After rtkit's AccessDenied, polkit's own answer (within the same deadline) tells a
    polkit refusal apart from rtkit's limits; None when polkit cannot be asked."""
    if error.name != "org.freedesktop.DBus.Error.AccessDenied" or bus is None:
        return None
    try:
        return _rtkit.polkit_check(action, bus=bus)
    except (BusError, OSError, ValueError):
        return None


@dataclass
class _Service:
    """rtkit or the portal, as one step of the chain: its bus, its limits and the ids it is
    to be given for the thread, or (``unusable``) the reason it cannot be asked."""

    name: str  # 'rtkit' or 'portal'
    bus: BusConnection | None = None
    limits: _rtkit.RtkitLimits | None = None
    target: _pidns.RtkitTarget | None = None
    unusable: str = ""
    system_bus: BusConnection | None = None  # for polkit's answer after a refusal

    def ask(self, realtime: bool, value: int) -> None:
        """Ask for SCHED_RR at priority ``value`` (``realtime``) or for nice ``value``."""
        assert self.bus is not None and self.target is not None
        target = self.target
        if self.name == "portal":
            portal_call = _portal.make_thread_realtime if realtime else \
                _portal.make_thread_high_priority
            portal_call(self.bus, target.tid, value, target.pid)
        else:
            rtkit_call = _rtkit.make_thread_realtime if realtime else \
                _rtkit.make_thread_high_priority
            rtkit_call(target.tid, value, pid=target.pid, bus=self.bus,
                       main_thread_form=target.main_thread_form)

    def explain(self, error: BusError, action: str, **context: Any) -> str:
        polkit = _polkit_after(error, self.system_bus, action)
        if self.name == "portal":
            return _portal.explain(error, **context)
        return _rtkit.explain(error, polkit=polkit, **context)


def _try_service(service: _Service, tid: int, policy: str, priority: int, reasons: list[str],
                 notes: list[str]) -> bool:
    """SCHED_RR from rtkit or through the portal (which forwards to rtkit): RLIMIT_RTTIME
    within its RTTimeUSecMax first, the priority clamped to its maximum."""
    name, limits = service.name, service.limits
    assert limits is not None and service.target is not None
    problems = limits.problems()
    if problems and name == "portal":
        # The portal publishes rtkit's limits as it read them when it started: none means it
        # found no rtkit then, and only its answer says so for sure.  Asked as it is.
        return _ask_service(service, tid, policy, priority, priority, reasons, notes,
                            _facts.rlimit(resource.RLIMIT_RTTIME)[1])
    if problems:
        reasons.append(f"{name}: skipped: " + ", ".join(problems) +
                       f" ({name} publishes no usable limit; check its configuration)")
        return False
    soft, hard = _facts.rlimit(resource.RLIMIT_RTTIME)
    # problems() is empty, so both limits are set
    new_soft, new_hard = rttime_limits(soft, hard, cast(int, limits.rttime_usec_max))
    if (new_soft, new_hard) != (soft, hard):
        try:
            resource.setrlimit(resource.RLIMIT_RTTIME, (new_soft, new_hard))
        except (OSError, ValueError) as e:
            reasons.append(f"{name}: skipped: cannot set RLIMIT_RTTIME to soft {new_soft} / "
                           f"hard {new_hard} µs, which rtkit requires: {e}")
            return False
        notes.append(f"RLIMIT_RTTIME set to soft {new_soft} / hard {new_hard} µs for {name}")
    clamped = clamp_priority(priority, cast(int, limits.max_realtime_priority))
    return _ask_service(service, tid, policy, priority, clamped, reasons, notes, new_hard)


def _ask_service(service: _Service, tid: int, policy: str, priority: int, clamped: int,
                 reasons: list[str], notes: list[str], rttime_hard_us: int | None) -> bool:
    name = service.name
    assert service.target is not None
    try:
        service.ask(True, clamped)
    except BusError as e:
        reasons.append(f"{name}: " + service.explain(
            e, _rtkit.POLKIT_ACTION_REALTIME, priority=clamped, limits=service.limits,
            rttime_hard_us=rttime_hard_us, budget=rt_budget(tid)))
        return False
    now = current_scheduling(tid)
    if not now.realtime:
        reasons.append(f"{name}: answered yes but the thread reads back as {now} "
                       "(demoted at once from outside?)")
        return False
    if clamped != priority:
        notes.append(f"priority {priority} clamped to {name}'s MaxRealtimePriority {clamped}")
    if service.target.note:
        notes.append(service.target.note)
    if now.policy != policy:
        notes.append(f"{name} grants {_KERNEL_NAMES[now.policy]}, not the "
                     f"{_KERNEL_NAMES[policy]} asked for")
    return True


def _try_service_nice(service: _Service, tid: int, nice: int, reasons: list[str],
                      notes: list[str]) -> bool:
    name, limits = f"{service.name}-nice", service.limits
    assert limits is not None
    if limits.min_nice_level is None:
        reasons.append(f"{name}: skipped: {service.name} publishes no MinNiceLevel")
        return False
    clamped = clamp_nice(nice, limits.min_nice_level)
    if clamped >= 0:
        reasons.append(f"{name}: skipped: {service.name}'s MinNiceLevel is "
                       f"{limits.min_nice_level}")
        return False
    try:
        service.ask(False, clamped)
    except BusError as e:
        reasons.append(f"{name}: " + service.explain(
            e, _rtkit.POLKIT_ACTION_HIGH_PRIORITY,
            rttime_hard_us=_facts.rlimit(resource.RLIMIT_RTTIME)[1]))
        return False
    now = current_scheduling(tid)
    if now.nice > clamped:
        reasons.append(f"{name}: answered yes but the thread reads back as {now}")
        return False
    if clamped != nice:
        notes.append(f"nice {nice} clamped to {service.name}'s MinNiceLevel {clamped}")
    return True


def _try_nice(tid: int, nice: int, reasons: list[str], notes: list[str]) -> bool:
    # Children of this thread must not inherit the favourable nice either.
    with contextlib.suppress(OSError):
        if os.sched_getscheduler(tid) == os.SCHED_OTHER:
            os.sched_setscheduler(tid, os.SCHED_OTHER | _RESET, os.sched_param(0))
    try:
        os.setpriority(os.PRIO_PROCESS, tid, nice)
        return True
    except OSError as e:
        first = e
    retry = nice_retry(nice, _facts.rlimit(resource.RLIMIT_NICE)[0])
    if retry is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, retry)
            notes.append(f"nice {nice} clamped to {retry} by RLIMIT_NICE")
            return True
        except OSError:
            pass
    reasons.append(f"nice: setpriority({nice}) refused ({_errno_name(first.errno)}): no "
                   "CAP_SYS_NICE and RLIMIT_NICE too low (e.g. '@audio - nice -15' in "
                   "/etc/security/limits.d)")
    return False


def _check_arguments(priority: int, policy: str, nice: int, timeout: float) -> None:
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, not {policy!r}")
    if isinstance(priority, bool) or not isinstance(priority, int) or not 1 <= priority <= 99:
        raise ValueError(f"priority must be an integer from 1 to 99, not {priority!r}")
    if isinstance(nice, bool) or not isinstance(nice, int) or not -20 <= nice <= 19:
        raise ValueError(f"nice must be an integer from -20 to 19, not {nice!r}")
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")


def acquire_realtime(tid: int | None = None, priority: int = 10, policy: str = "fifo",
                     nice: int = -11, timeout: float = 2.0) -> RealtimeGrant:
    """Make thread ``tid`` (default: the calling thread) realtime by the best method allowed.

    Walks the chain of the module docstring (direct, rtkit, rtkit-nice, nice, none) and stops
    at the first step the kernel confirms.  Never raises for a refusal: the grant says which
    method worked (``method``) and why the better ones did not (``reasons``).  See
    :func:`current_scheduling` and :func:`demote`.

    Parameters
    ----------
    tid : int or None
        A kernel thread id of this process; None: the calling thread.
    priority : int
        Realtime priority, 1 .. 99, for the direct path; rtkit clamps it to its
        MaxRealtimePriority (and to RLIMIT_RTPRIO on the direct retry).
    policy : str
        'fifo' or 'rr' for the direct path; rtkit always grants SCHED_RR.
    nice : int
        The nice level (-20 .. 19) to fall back to when no realtime policy is allowed;
        0 or more: no nice fallback.
    timeout : float
        Seconds (> 0) that all the bus traffic together may take.

    Returns
    -------
    RealtimeGrant
        The method that worked and the thread's scheduling read back from the kernel.

    Raises
    ------
    ValueError
        A bad argument, or ``tid`` is not a thread of this process.

    Notes
    -----
    Any thread, about any thread of this process, but never from the audio path: it blocks
    on the system bus for up to ``timeout`` s.  The rtkit path lowers the process's
    RLIMIT_RTTIME and leaves it lowered even when rtkit then refuses.
    """
    _check_arguments(priority, policy, nice, timeout)
    tid = _own_tid(tid)
    reasons: list[str] = []
    notes: list[str] = []
    if _try_direct(tid, policy, priority, reasons, notes):
        return _grant("direct", tid, priority, reasons, notes)
    with contextlib.ExitStack() as buses:
        services = _bus_services(tid, time.monotonic() + timeout, buses)
        for service in services:
            if service.unusable:
                reasons.append(f"{service.name}: {service.unusable}")
            elif _try_service(service, tid, policy, priority, reasons, notes):
                return _grant(service.name, tid, priority, reasons, notes)
        for service in services:
            name = f"{service.name}-nice"
            if service.unusable:
                reasons.append(f"{name}: skipped: {service.name} cannot be asked (see above)")
            elif nice >= 0:
                reasons.append(f"{name}: skipped: nice {nice} is not a raise")
            elif _try_service_nice(service, tid, nice, reasons, notes):
                return _grant(name, tid, priority, reasons, notes)
    if nice >= 0:
        reasons.append(f"nice: skipped: nice {nice} is not a raise")
    elif _try_nice(tid, nice, reasons, notes):
        return _grant("nice", tid, priority, reasons, notes)
    return _grant("none", tid, priority, reasons, notes)


def _time_left(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise BusError("streamcore.Timeout", f"no time was left to reach {what} (the "
                       "deadline of the whole request passed)")
    return left


def sandbox_reason(bus_pid: int | None) -> str | None:
    """Why this process counts as sandboxed for realtime requests, or None.

    Parameters
    ----------
    bus_pid : int or None
        The pid a bus reports for our connection (None: not known).

    Returns
    -------
    str or None
        'Flatpak sandbox (app ...)' when /.flatpak-info exists; 'PID namespace (...)' when
        the bus sees another pid than we do or /proc lists more than one id for us.
    """
    app = _portal.flatpak_app()
    if app is not None:
        return f"Flatpak sandbox (app {app or '(unnamed)'})"
    own = os.getpid()
    if bus_pid is not None and bus_pid != own:
        return f"PID namespace (pid {own} here, {bus_pid} for the bus)"
    if len(_pidns.nspid()) > 1:
        return f"PID namespace (pid {own} here, ids {_pidns.nspid()} from the outside in)"
    return None


def _bus_services(tid: int, deadline: float, buses: contextlib.ExitStack) -> list[_Service]:
    """rtkit and the portal, in the order to ask them (PipeWire's module-rt: sandboxed, the
    portal first; otherwise rtkit, and the portal only when rtkit cannot be reached), each
    ready to be asked or with the reason it cannot be.  Both share one deadline."""
    rtkit, portal = _Service("rtkit"), _Service("portal")
    bus_pid = None
    try:
        system = buses.enter_context(BusConnection(_time_left(deadline, "the system bus")))
    except BusError as e:
        rtkit.unusable = _rtkit.explain(e)
    else:
        rtkit.system_bus = portal.system_bus = system
        bus_pid = system.own_pid()
        try:
            rtkit.limits = _rtkit.read_limits(bus=system)
        except BusError as e:
            rtkit.unusable = _rtkit.explain(e)
        else:
            target = _pidns.rtkit_target(tid, bus_pid)
            if isinstance(target, str):  # a PID namespace hides this thread from rtkit
                rtkit.unusable = target
            else:
                rtkit.bus, rtkit.target = system, target
    sandbox = sandbox_reason(bus_pid)
    if sandbox is None and rtkit.bus is not None:
        portal.unusable = ("skipped: not sandboxed, and rtkit answers on the system bus (the "
                           "portal would forward to the same rtkit)")
    else:
        _open_portal(portal, tid, deadline, buses)
    return [portal, rtkit] if sandbox is not None else [rtkit, portal]


def _open_portal(portal: _Service, tid: int, deadline: float,
                 buses: contextlib.ExitStack) -> None:
    try:
        session = buses.enter_context(
            BusConnection(_time_left(deadline, "the session bus"), session=True))
        if not session.has_owner(_portal.PORTAL_NAME):
            portal.unusable = (f"no xdg-desktop-portal on the session bus at "
                               f"{session.address} (no owner of {_portal.PORTAL_NAME})")
            return
        portal.limits = _portal.read_limits(session)
    except BusError as e:
        portal.unusable = _portal.explain(e)
        return
    target = _portal_target(tid, session.own_pid())
    if isinstance(target, str):
        portal.unusable = target
    else:
        portal.bus, portal.target = session, target


def _portal_target(tid: int, bus_pid: int | None) -> _pidns.RtkitTarget | str:
    """The ids to give the portal: our own in a Flatpak sandbox (the portal maps them from
    the sandbox's bwrapinfo.json); otherwise it passes them to rtkit unmapped, so they must
    be the ones rtkit sees, as for rtkit itself."""
    if _portal.flatpak_app() is not None:
        return _pidns.RtkitTarget(os.getpid(), tid,
                                  note="Flatpak sandbox: the portal mapped this thread's ids")
    target = _pidns.rtkit_target(tid, bus_pid)
    if isinstance(target, str):
        return ("the portal cannot name this thread either: it maps ids only for Flatpak "
                "apps, and this PID namespace hides the host's ids")
    if target.main_thread_form:  # the portal has no own-pid form: name the main thread
        return _pidns.RtkitTarget(target.pid, target.pid, note=target.note)
    return target


# ---- a scratch thread to promote ---------------------------------------------------------


def _own_scheduling(tid: int) -> Scheduling:
    """The calling thread's scheduling as it reads it itself (``tid`` labels the answer)."""
    return Scheduling._from_kernel(tid, os.sched_getscheduler(0),
                                   os.sched_getparam(0).sched_priority,
                                   os.getpriority(os.PRIO_PROCESS, 0))


def _forked_child_scheduling() -> Scheduling:
    """Fork; the child reads the scheduling it starts with, sends it back and exits."""
    read_end, write_end = os.pipe()
    try:
        pid = os.fork()
        if pid == 0:  # the child: three numbers into the pipe, then gone
            try:
                answer = (f"{os.sched_getscheduler(0)} {os.sched_getparam(0).sched_priority} "
                          f"{os.getpriority(os.PRIO_PROCESS, 0)}")
                os.write(write_end, answer.encode())
            finally:
                os._exit(0)
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as f:
            read_end = -1
            words = f.read().split()
        os.waitpid(pid, 0)
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    if len(words) != 3:
        raise OSError(_errno.EPIPE, "the forked child did not report its scheduling")
    policy, priority, nice = (int(w) for w in words)
    return Scheduling._from_kernel(0, policy, priority, nice)


class ProbeThread:
    """A scratch thread that waits for requests: promote it by :attr:`tid`, then let it read
    its own scheduling (:meth:`scheduling`) or fork a child that reads its
    (:meth:`child_scheduling`).

    Doctor uses it as its scratch thread (promoting the caller's own thread would change it);
    tests use it to prove that a thread is promoted by tid and that RESET_ON_FORK holds.  A
    plain Python thread that only waits: any thread may call the methods (one request at a
    time).  Close it once (``close()`` or ``with``).  The same probe in C, for tests that
    need a thread Python did not create, is ``bench.drivers.NativeProbe``.
    """

    # Class-level None so close() is safe when __init__ failed half-way.
    _thread: threading.Thread | None = None

    def __init__(self) -> None:
        self._requests: list[Any] = []
        self._wake = threading.Condition()
        self._serial = threading.Lock()
        self._reply: tuple[Any, BaseException | None] | None = None
        self.tid = 0
        started = threading.Event()

        def serve() -> None:
            self.tid = threading.get_native_id()
            started.set()
            while True:
                with self._wake:
                    while not self._requests:
                        self._wake.wait()
                    request = self._requests.pop()
                if request is None:
                    return
                try:
                    reply: tuple[Any, BaseException | None] = (request(), None)
                except BaseException as e:  # handed to the asking thread
                    reply = (None, e)
                with self._wake:
                    self._reply = reply
                    self._wake.notify_all()

        self._thread = threading.Thread(target=serve, name="streamcore-probe", daemon=True)
        self._thread.start()
        started.wait()

    def _ask(self, request: Any) -> Scheduling:
        with self._serial:
            if self._thread is None:
                raise ValueError("the probe thread is closed")
            with self._wake:
                self._reply = None
                self._requests.append(request)
                self._wake.notify_all()
                while self._reply is None:
                    self._wake.wait()
                value, error = self._reply
        if error is not None:
            raise error
        return cast(Scheduling, value)

    def scheduling(self) -> Scheduling:
        """The probe's scheduling as the probe itself reads it."""
        return self._ask(lambda: _own_scheduling(self.tid))

    def child_scheduling(self) -> Scheduling:
        """The scheduling a child forked by the probe starts with (tid 0: it has exited)."""
        return self._ask(_forked_child_scheduling)

    def close(self) -> None:
        """Stop and join the thread; safe to call again."""
        with self._serial:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            with self._wake:
                self._requests.append(None)
                self._wake.notify_all()
        thread.join()

    def __enter__(self) -> ProbeThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if self._thread is not None:
            warnings.warn("ProbeThread was not closed", ResourceWarning, stacklevel=2)
            self.close()
