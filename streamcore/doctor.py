"""`streamcore doctor`: is this machine, for this user, ready for realtime audio?

Like rtcqs, and more: each check ends as ``pass``, ``warn``, ``fail`` or ``unknown`` (a fact
that could not be read, with why; e.g. no cpufreq in a VM) with a one-line fix.  The realtime
check really tries: a native scratch thread is promoted with :func:`acquire_realtime`, a child
forked from it must start SCHED_OTHER, then the thread is demoted and stopped.

Each check reads its facts (I/O) and hands them to a ``judge_*`` function (data only), so the
verdicts are tested on data and a missing file is never a crash.  Every bus step is bounded by
``timeout`` (the realtime try, rtkit's properties and polkit's answers: at most about three
times ``timeout`` in all).  As the rtkit path requires, trying realtime lowers this process's
RLIMIT_RTTIME; the limits are read for the report before that.

JSON report (``streamcore doctor --json``), checked by :func:`validate_report`::

    version   str    streamcore's version
    user      dict   uid (int), name (str), groups (list of str): who was checked
    summary   dict   pass, warn, fail, unknown (int): how many checks ended so
    checks    list   one dict per check, in CHECK_IDS order:
        id      str        one of CHECK_IDS
        title   str        what is checked, a few words
        status  str        'pass' | 'warn' | 'fail' | 'unknown'
        detail  str        what was found, one line
        fix     str|None   what to do, one line (None when nothing is to be done)
        data    dict       the facts behind the verdict (JSON values; keys vary per check)
"""

from __future__ import annotations

import contextlib
import glob
import grp
import gzip
import os
import platform
import pwd
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import prctl

from streamcore import _facts
from streamcore import realtime as _rt
from streamcore import rtkit as _rtkit
from streamcore._version import __version__
from streamcore.bus import BusError

__all__ = [
    "CHECK_IDS",
    "REPORT_FIELDS",
    "STATUSES",
    "Check",
    "format_report",
    "run_checks",
    "validate_report",
]

# Output ring (2 x 256 KiB), 16 voice rings of 128 KiB, telemetry: about 3 MiB; rounded up.
_ESTIMATED_LOCKED_BYTES = 4 * 1024 * 1024

STATUSES = ("pass", "warn", "fail", "unknown")
CHECK_IDS = (
    "realtime", "rtkit", "polkit", "rlimit-rtprio", "rlimit-memlock", "rlimit-rttime",
    "capabilities", "groups", "kernel-preempt", "threadirqs", "high-res-timers",
    "rt-throttling", "rt-group-budget", "cpu-governor", "smt", "swappiness",
    "cpu-dma-latency", "timer-slack",
)
REPORT_FIELDS: dict[str, Any] = {
    "version": str,
    "user": {"uid": int, "name": str, "groups": list},
    "summary": {status: int for status in STATUSES},
    "checks": [{"id": str, "title": str, "status": str, "detail": str, "fix": (str, type(None)),
                "data": dict}],
}
"""The documented shape of the JSON report (see the module docstring)."""

DEFAULT_PRIORITY = 10  # what the engine asks for by default (acquire_realtime's default)


@dataclass
class Check:
    """One verdict."""

    id: str
    title: str
    status: str
    detail: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


# ---- reading facts ------------------------------------------------------------------------


def _read(path: str) -> str | None:
    """A small file's text, stripped; None when absent or unreadable."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _kernel_config() -> dict[str, str] | None:
    """CONFIG_* of the running kernel (/proc/config.gz or /boot/config-<release>), or None."""
    text = None
    with contextlib.suppress(OSError, EOFError, gzip.BadGzipFile), \
            gzip.open("/proc/config.gz", "rt") as f:
        text = f.read()
    if text is None:
        text = _read(f"/boot/config-{platform.release()}")
    if text is None:
        return None
    config = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            config[key] = value
    return config


_text = _facts.limit_text


# ---- the verdicts, on data ----------------------------------------------------------------


def judge_realtime(grant: dict[str, Any] | None, child: dict[str, Any] | None,
                   error: str | None) -> Check:
    title = "realtime scheduling for this user"
    if grant is None:
        return Check("realtime", title, "unknown", f"could not try: {error}",
                     "run `streamcore doctor --debug` to see why", {"error": error})
    data = {"grant": grant, "forked_child": child}
    method, reasons = grant["method"], grant["reasons"]
    # The most useful reason: the bus one for a user who needs rtkit, else the direct one.
    fix = next((r for r in reasons if r.startswith("rtkit: ")), reasons[0] if reasons else None)
    if grant["policy"] in ("fifo", "rr"):
        child_ok = child is not None and child["policy"] == "other" and child["nice"] >= 0
        detail = (f"{grant['method']}: SCHED_{grant['policy'].upper()} priority "
                  f"{grant['priority']}, "
                  + ("reset-on-fork verified (a child forked by the thread ran SCHED_OTHER)"
                     if grant["reset_on_fork"] and child_ok else
                     "RESET-ON-FORK NOT EFFECTIVE: a forked child keeps realtime"))
        if not (grant["reset_on_fork"] and child_ok):
            return Check("realtime", title, "fail", detail,
                         "report this: the kernel did not keep SCHED_RESET_ON_FORK", data)
        return Check("realtime", title, "pass", detail, None, data)
    if method in ("rtkit-nice", "nice"):
        return Check("realtime", title, "warn",
                     f"no realtime, only nice {grant['nice']} via {method}", fix, data)
    return Check("realtime", title, "fail", "no realtime and no raised priority", fix, data)


def judge_rtkit(limits: dict[str, Any] | None, error: str | None, realtime_method: str | None,
                address: str) -> Check:
    title = "RealtimeKit on the system bus"
    data = {"bus": address, "limits": limits, "error": error}
    if limits is None:
        needed = realtime_method not in ("direct",)
        return Check("rtkit", title, "fail" if needed else "warn", f"no answer: {error}",
                     "install the 'rtkit' package and make sure rtkit-daemon and the system bus "
                     "run" + ("" if needed else " (not needed here: direct realtime works)"),
                     data)
    problems = _rtkit.RtkitLimits(**limits).problems()
    detail = (f"MaxRealtimePriority {limits['max_realtime_priority']}, MinNiceLevel "
              f"{limits['min_nice_level']}, RTTimeUSecMax {limits['rttime_usec_max']} µs")
    if problems:
        return Check("rtkit", title, "fail", detail + ": " + ", ".join(problems),
                     "fix rtkit-daemon's options (--max-realtime-priority, --rttime-usec-max)",
                     data)
    return Check("rtkit", title, "pass", detail, None, data)


def judge_polkit(answers: dict[str, dict[str, bool]] | None, error: str | None,
                 realtime_method: str | None) -> Check:
    title = "polkit's answer for rtkit's actions"
    if answers is None:
        return Check("polkit", title, "unknown", f"polkit could not be asked: {error}",
                     "start polkitd (package 'polkitd') if rtkit is to be used", {"error": error})
    refused = [a for a, v in answers.items() if not v["authorized"]]
    detail = "; ".join(
        f"{a.rsplit('.', 1)[-1]}: " + ("yes" if v["authorized"] else
                                       "only with authentication" if v["challenge"] else "no")
        for a, v in answers.items())
    if not refused:
        return Check("polkit", title, "pass", detail, None, answers)
    status = "warn" if realtime_method == "direct" else "fail"
    return Check("polkit", title, status, detail,
                 "add a rule in /etc/polkit-1/rules.d returning polkit.Result.YES for "
                 "org.freedesktop.RealtimeKit1.* when subject.isInGroup(\"audio\") (rtkit's "
                 "default allows only active local sessions)", answers)


def judge_rtprio(limit: dict[str, int | None], cap_sys_nice: bool | None) -> Check:
    title = "RLIMIT_RTPRIO"
    hard = limit["hard"]
    detail = f"soft {_text(limit['soft'])}, hard {_text(hard)}"
    data = {**limit, "cap_sys_nice": cap_sys_nice}
    if cap_sys_nice:
        return Check("rlimit-rtprio", title, "pass",
                     detail + " (CAP_SYS_NICE makes it irrelevant)", None, data)
    if hard is None or hard >= DEFAULT_PRIORITY:
        return Check("rlimit-rtprio", title, "pass", detail, None, data)
    return Check("rlimit-rtprio", title, "warn",
                 detail + f": below streamcore's default priority {DEFAULT_PRIORITY}",
                 "add '@audio - rtprio 95' to /etc/security/limits.d/audio.conf and log in "
                 "again (or rely on rtkit)", data)


def judge_memlock(limit: dict[str, int | None], cap_ipc_lock: bool | None, needed: int,
                  probe_error: str | None, untried: str | None = None) -> Check:
    title = "RLIMIT_MEMLOCK for the engine's buffers"
    soft = limit["soft"]
    detail = (f"soft {_text(soft, ' B')}, hard {_text(limit['hard'], ' B')}; "
              f"the engine locks about {needed} B by default")
    data = {**limit, "needed": needed, "cap_ipc_lock": cap_ipc_lock, "probe_error": probe_error}
    if untried is not None:  # the probe is native: without the core nothing was locked
        return Check("rlimit-memlock", title, "unknown",
                     detail + f"; locking was not tried: {untried}",
                     "the probe is native: " + _facts.rebuild_hint(),
                     {**data, "untried": untried})
    if probe_error is not None:
        return Check("rlimit-memlock", title, "fail",
                     detail + f"; locking {needed} B failed: {probe_error}",
                     "add '@audio - memlock unlimited' to /etc/security/limits.d/audio.conf "
                     "and log in again", data)
    if cap_ipc_lock or soft is None or soft >= needed:
        return Check("rlimit-memlock", title, "pass", detail, None, data)
    return Check("rlimit-memlock", title, "warn", detail,
                 "add '@audio - memlock unlimited' to /etc/security/limits.d/audio.conf", data)


def judge_rttime(limit: dict[str, int | None], rttime_usec_max: int | None) -> Check:
    title = "RLIMIT_RTTIME"
    soft, hard = limit["soft"], limit["hard"]
    detail = f"soft {_text(soft, ' µs')}, hard {_text(hard, ' µs')}"
    data = {**limit, "rtkit_rttime_usec_max": rttime_usec_max}
    if hard is None:
        return Check("rlimit-rttime", title, "pass",
                     detail + " (streamcore sets hard <= RTTimeUSecMax, soft 0.8 x hard, "
                     "itself before it asks rtkit)", None, data)
    if soft is not None and soft >= hard:
        return Check("rlimit-rttime", title, "warn",
                     detail + ": no SIGXCPU warning before the kernel's SIGKILL",
                     "set the soft limit below the hard one (streamcore does 0.8 x hard when "
                     "it asks rtkit)", data)
    return Check("rlimit-rttime", title, "pass", detail, None, data)


def judge_capabilities(caps: dict[str, bool] | None, error: str | None,
                       realtime_ok: bool, memlock_ok: bool) -> Check:
    title = "CAP_SYS_NICE / CAP_IPC_LOCK"
    if caps is None:
        return Check("capabilities", title, "unknown", f"cannot read capabilities: {error}",
                     "mount /proc (capabilities are read from /proc/thread-self/status)",
                     {"error": error})
    detail = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in caps.items())
    if all(caps.values()):
        return Check("capabilities", title, "pass", detail, None, caps)
    if realtime_ok and memlock_ok:
        return Check("capabilities", title, "pass",
                     detail + " (not needed: realtime and memory locking work without)", None,
                     caps)
    return Check("capabilities", title, "warn", detail,
                 "grant them to the program (setcap cap_sys_nice,cap_ipc_lock+ep) or use "
                 "rtkit and limits.d", caps)


def judge_groups(uid: int, member_of: list[str], existing: list[str],
                 realtime_ok: bool) -> Check:
    title = "audio / realtime group"
    data = {"member_of": member_of, "existing": existing}
    if uid == 0:
        return Check("groups", title, "pass", "root", None, data)
    if member_of:
        return Check("groups", title, "pass", "member of " + ", ".join(member_of), None, data)
    detail = ("not a member of " + " or ".join(existing)) if existing else \
        "no audio or realtime group exists here"
    return Check("groups", title, "pass" if realtime_ok else "warn",
                 detail + (" (not needed: realtime works)" if realtime_ok else ""),
                 None if realtime_ok else
                 "usermod -aG audio $USER (limits.d and polkit rules usually name @audio)", data)


def judge_preempt(version: str, realtime_flag: str | None, cmdline: str | None,
                  config: dict[str, str] | None, debugfs_mode: str | None) -> Check:
    title = "kernel preemption"
    data = {"version": version, "cmdline_preempt": None, "mode": None}
    words = (cmdline or "").split()
    if realtime_flag == "1" or "PREEMPT_RT" in version or \
            (config or {}).get("CONFIG_PREEMPT_RT") == "y":
        data["mode"] = "rt"
        return Check("kernel-preempt", title, "pass", "PREEMPT_RT kernel", None, data)
    mode = None
    source = ""
    if debugfs_mode:  # e.g. "none voluntary (full) lazy"
        chosen = [w.strip("()") for w in debugfs_mode.split() if w.startswith("(")]
        mode, source = (chosen[0], "debugfs") if chosen else (None, "")
    dynamic = "PREEMPT_DYNAMIC" in version or (config or {}).get("CONFIG_PREEMPT_DYNAMIC") == "y"
    for word in words:
        if word.startswith("preempt=") and mode is None and dynamic:
            mode, source = word.split("=", 1)[1], "the kernel command line"
            data["cmdline_preempt"] = mode
    if mode is None and config is not None:
        for key, name in (("CONFIG_PREEMPT", "full"), ("CONFIG_PREEMPT_LAZY", "lazy"),
                          ("CONFIG_PREEMPT_VOLUNTARY", "voluntary"),
                          ("CONFIG_PREEMPT_NONE", "none")):
            if config.get(key) == "y":
                mode, source = name, "the kernel config default"
                break
    if mode is None and "PREEMPT " in version + " " and not dynamic:
        mode, source = "full", "uname"
    data["mode"] = mode
    kind = "PREEMPT_DYNAMIC" if dynamic else "static preemption"
    if mode is None:
        return Check("kernel-preempt", title, "unknown",
                     f"{kind}: the preemption mode is not readable (no debugfs, no kernel config)",
                     "boot with preempt=full to be sure", data)
    detail = f"{kind}, mode {mode} (from {source})"
    if mode in ("full", "lazy"):
        return Check("kernel-preempt", title, "pass", detail, None, data)
    return Check("kernel-preempt", title, "warn", detail,
                 "boot with preempt=full (PREEMPT_DYNAMIC kernels) or use a PREEMPT_RT kernel"
                 if dynamic else "use a kernel built with CONFIG_PREEMPT or PREEMPT_RT", data)


def judge_threadirqs(cmdline: str | None, preempt_rt: bool) -> Check:
    title = "threaded interrupt handlers"
    if preempt_rt:
        return Check("threadirqs", title, "pass", "forced by PREEMPT_RT", None, {})
    if cmdline is None:
        return Check("threadirqs", title, "unknown", "/proc/cmdline is not readable",
                     "boot with threadirqs", {})
    if "threadirqs" in cmdline.split():
        return Check("threadirqs", title, "pass", "threadirqs is on", None, {})
    return Check("threadirqs", title, "warn", "threadirqs is off: interrupt handlers run "
                 "before every thread, whatever its priority",
                 "boot with threadirqs (then raise the sound card's IRQ thread priority)", {})


def judge_hrtimers(resolution_ns: int | None, config: dict[str, str] | None) -> Check:
    title = "high resolution timers"
    data = {"resolution_ns": resolution_ns,
            "config": None if config is None else config.get("CONFIG_HIGH_RES_TIMERS")}
    if resolution_ns is None:
        return Check("high-res-timers", title, "unknown", "clock_getres failed",
                     "check CONFIG_HIGH_RES_TIMERS", data)
    if resolution_ns <= 1000:
        return Check("high-res-timers", title, "pass",
                     f"CLOCK_MONOTONIC resolution {resolution_ns} ns", None, data)
    return Check("high-res-timers", title, "fail",
                 f"CLOCK_MONOTONIC resolution {resolution_ns} ns: timers are tick based",
                 "use a kernel with CONFIG_HIGH_RES_TIMERS=y (and not highres=off)", data)


def judge_throttling(runtime_us: int | None, period_us: int | None) -> Check:
    title = "RT throttling"
    data = {"sched_rt_runtime_us": runtime_us, "sched_rt_period_us": period_us}
    if runtime_us is None or period_us is None:
        return Check("rt-throttling", title, "unknown",
                     "/proc/sys/kernel/sched_rt_runtime_us is not readable",
                     None, data)
    if runtime_us < 0:
        return Check("rt-throttling", title, "warn",
                     "off (sched_rt_runtime_us = -1): a runaway realtime thread can freeze the "
                     "machine; only streamcore's watchdog would stop it",
                     "sysctl kernel.sched_rt_runtime_us=950000", data)
    if runtime_us == 0:
        return Check("rt-throttling", title, "fail",
                     "sched_rt_runtime_us = 0: realtime threads get no CPU time at all",
                     "sysctl kernel.sched_rt_runtime_us=950000", data)
    return Check("rt-throttling", title, "pass",
                 f"realtime threads may use {runtime_us} of every {period_us} µs", None, data)


def judge_rt_budget(budget: tuple[str, int] | None) -> Check:
    title = "RT group scheduling budget of this cgroup"
    if budget is None:
        return Check("rt-group-budget", title, "pass",
                     "no RT group scheduling for this cgroup (no cpu.rt_runtime_us)", None,
                     {"path": None, "rt_runtime_us": None})
    path, value = budget
    data = {"path": path, "rt_runtime_us": value}
    if value == 0:
        return Check("rt-group-budget", title, "fail",
                     f"{path} is 0: no thread of this cgroup may run realtime, even as root "
                     "(the usual container failure)",
                     f"echo 950000 > {path} (or docker run --cpu-rt-runtime=950000)", data)
    return Check("rt-group-budget", title, "pass", f"{path} is {value} µs", None, data)


def judge_governor(governors: dict[str, str | None]) -> Check:
    title = "CPU frequency governor"
    known = {cpu: g for cpu, g in governors.items() if g is not None}
    if not known:
        return Check("cpu-governor", title, "unknown",
                     "no cpufreq in sysfs (a virtual machine, or cpufreq disabled): the host "
                     "or firmware decides", None, {"governors": governors})
    slow = sorted({g for g in known.values() if g != "performance"})
    detail = ", ".join(f"{c}: {g}" for c, g in sorted(known.items()))
    if not slow:
        return Check("cpu-governor", title, "pass", detail, None, {"governors": governors})
    return Check("cpu-governor", title, "warn", detail,
                 "cpupower frequency-set -g performance", {"governors": governors})


def judge_smt(active: str | None, control: str | None) -> Check:
    title = "simultaneous multithreading (SMT)"
    data = {"active": active, "control": control}
    if control in ("notsupported", "notimplemented") or active == "0":
        return Check("smt", title, "pass", f"off ({control or 'inactive'})", None, data)
    if active == "1":
        return Check("smt", title, "warn",
                     "on: sibling hardware threads share a core and add latency spikes",
                     "echo off > /sys/devices/system/cpu/smt/control (or boot with nosmt)", data)
    return Check("smt", title, "unknown", "/sys/devices/system/cpu/smt is not readable", None,
                 data)


def judge_swappiness(value: int | None) -> Check:
    title = "vm.swappiness"
    if value is None:
        return Check("swappiness", title, "unknown", "/proc/sys/vm/swappiness is not readable",
                     None, {"swappiness": None})
    if value <= 10:
        return Check("swappiness", title, "pass", str(value), None, {"swappiness": value})
    return Check("swappiness", title, "warn",
                 f"{value}: unlocked pages of audio programs may be swapped out "
                 "(streamcore's rings are mlocked)", "sysctl vm.swappiness=10",
                 {"swappiness": value})


def judge_dma_latency(exists: bool, writable: bool) -> Check:
    title = "/dev/cpu_dma_latency"
    data = {"exists": exists, "writable": writable}
    if not exists:
        return Check("cpu-dma-latency", title, "unknown",
                     "absent (no PM QoS device here)", None, data)
    if writable:
        return Check("cpu-dma-latency", title, "pass",
                     "writable: deep CPU idle states can be held off while streaming", None, data)
    return Check("cpu-dma-latency", title, "warn",
                 "not writable by this user: deep CPU idle states add wake-up latency",
                 "a udev rule: KERNEL==\"cpu_dma_latency\", GROUP=\"audio\", MODE=\"0660\"", data)


def judge_timer_slack(slack_ns: int | None, realtime_ok: bool) -> Check:
    title = "timer slack"
    data = {"timer_slack_ns": slack_ns}
    if slack_ns is None:
        return Check("timer-slack", title, "unknown", "PR_GET_TIMERSLACK failed", None, data)
    if realtime_ok:
        return Check("timer-slack", title, "pass",
                     f"{slack_ns} ns (the kernel ignores it for realtime threads)", None, data)
    if slack_ns <= 1000:
        return Check("timer-slack", title, "pass", f"{slack_ns} ns", None, data)
    return Check("timer-slack", title, "warn",
                 f"{slack_ns} ns: without realtime, timed waits may end this much late",
                 "get realtime (see above), or prctl(PR_SET_TIMERSLACK, 1) in audio threads",
                 data)


# ---- running the checks (I/O) -------------------------------------------------------------


def _guard(check_id: str, title: str, func: Callable[[], Check]) -> Check:
    """A check that crashes is reported as unknown, never as doctor's own crash."""
    try:
        return func()
    except Exception as e:  # any surprise on an odd system: report it, keep going
        return Check(check_id, title, "unknown", f"the check failed: {type(e).__name__}: {e}",
                     None, {"error": str(e)})


def _try_realtime(timeout: float) -> tuple[dict[str, Any] | None, dict[str, Any] | None,
                                           str | None]:
    problem = _facts.native_core().problem()
    if problem is not None:  # the scratch thread is native
        return None, None, problem
    try:
        with _rt.ProbeThread() as probe:
            grant = _rt.acquire_realtime(probe.tid, priority=DEFAULT_PRIORITY, timeout=timeout)
            child = probe.child_scheduling() if grant.realtime else None
            _rt.demote(probe.tid)
    except Exception as e:
        return None, None, f"{type(e).__name__}: {e}"
    grant_data = asdict(grant)
    grant_data["reasons"] = list(grant.reasons)
    grant_data["notes"] = list(grant.notes)
    return grant_data, (asdict(child) if child else None), None


def _caps() -> tuple[dict[str, bool] | None, str | None]:
    try:
        return _facts.capabilities(("CAP_SYS_NICE", "CAP_IPC_LOCK")), None
    except Exception as e:
        return None, str(e)


def _mlock_probe(needed: int) -> tuple[str | None, str | None]:
    """(why locking ``needed`` bytes failed, why it could not be tried); both None: locked."""
    core = _facts.native_core()
    if not core.ok:
        return None, f"the native core is {core.state} ({core.error})"
    try:
        return _facts.probe_mlock(needed), None
    except ImportError as e:
        return None, f"native core not loaded: {e}"


def _engine_locked_bytes() -> int:
    """What an engine locks by default: the engine's own figure once it exports one, else the
    estimate (also when the native core is missing or stale: the engine cannot be imported
    then, and `streamcore doctor` says so instead of crashing)."""
    if not _facts.native_core().ok:
        return _ESTIMATED_LOCKED_BYTES
    try:  # the engine owns its default buffer sizes once it exists
        from streamcore.engine import DEFAULT_LOCKED_BYTES  # type: ignore
    except ImportError:
        return _ESTIMATED_LOCKED_BYTES
    return int(DEFAULT_LOCKED_BYTES)


def _user() -> dict[str, Any]:
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    groups = []
    for gid in sorted(set(os.getgroups()) | {os.getgid()}):
        try:
            groups.append(grp.getgrgid(gid).gr_name)
        except KeyError:
            groups.append(str(gid))
    return {"uid": uid, "name": name, "groups": groups}


def _existing_groups(names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        with contextlib.suppress(KeyError):
            grp.getgrnam(name)
            out.append(name)
    return out


def run_checks(timeout: float = 1.0) -> dict[str, Any]:
    """Run every check; the JSON-ready report described in the module docstring."""
    from streamcore.bus import system_bus_address

    user = _user()
    rtprio = _facts.rlimit_fields(resource.RLIMIT_RTPRIO)
    memlock = _facts.rlimit_fields(resource.RLIMIT_MEMLOCK)
    rttime = _facts.rlimit_fields(resource.RLIMIT_RTTIME)  # before the realtime try lowers it
    caps, caps_error = _caps()
    grant, child, rt_error = _try_realtime(timeout)
    method = grant["method"] if grant else None
    # the cast: bool(grant) has ruled out None
    realtime_ok = bool(grant) and cast(dict[str, Any], grant)["policy"] in ("fifo", "rr")

    limits, rtkit_error = None, None
    try:
        limits = asdict(_rtkit.read_limits(timeout))
    except BusError as e:
        rtkit_error = _rtkit.explain(e)
    answers: dict[str, dict[str, bool]] | None
    answers, polkit_error = None, None
    try:
        answers = {}
        for action in (_rtkit.POLKIT_ACTION_REALTIME, _rtkit.POLKIT_ACTION_HIGH_PRIORITY):
            answer = _rtkit.polkit_check(action, timeout)
            answers[action] = {"authorized": answer.authorized, "challenge": answer.challenge}
    except BusError as e:
        answers, polkit_error = None, str(e)
    except Exception as e:
        answers, polkit_error = None, f"{type(e).__name__}: {e}"

    locked_bytes = _engine_locked_bytes()
    memlock_probe, memlock_untried = _mlock_probe(locked_bytes)
    cmdline = _read("/proc/cmdline")
    config = _kernel_config()
    version = platform.version()
    realtime_flag = _read("/sys/kernel/realtime")
    preempt_rt = realtime_flag == "1" or "PREEMPT_RT" in version
    cpus = sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*"),
                  key=lambda p: int(p.rsplit("cpu", 1)[1]))
    governors = {os.path.basename(c): _read(f"{c}/cpufreq/scaling_governor") for c in cpus}

    def resolution() -> int | None:
        try:
            return round(time.clock_getres(time.CLOCK_MONOTONIC) * 1e9)
        except OSError:
            return None

    def slack() -> int | None:
        try:
            return int(prctl.get_timerslack())
        except Exception:
            return None

    dma = "/dev/cpu_dma_latency"
    steps: list[tuple[str, str, Callable[[], Check]]] = [
        ("realtime", "realtime", lambda: judge_realtime(grant, child, rt_error)),
        ("rtkit", "rtkit", lambda: judge_rtkit(limits, rtkit_error, method,
                                                system_bus_address())),
        ("polkit", "polkit", lambda: judge_polkit(answers, polkit_error, method)),
        ("rlimit-rtprio", "RLIMIT_RTPRIO",
         lambda: judge_rtprio(rtprio, caps["CAP_SYS_NICE"] if caps else None)),
        ("rlimit-memlock", "RLIMIT_MEMLOCK",
         lambda: judge_memlock(memlock, caps["CAP_IPC_LOCK"] if caps else None,
                               locked_bytes, memlock_probe, memlock_untried)),
        ("rlimit-rttime", "RLIMIT_RTTIME",
         lambda: judge_rttime(rttime, limits["rttime_usec_max"] if limits else None)),
        ("capabilities", "capabilities",
         lambda: judge_capabilities(caps, caps_error, realtime_ok,
                                    memlock_probe is None and memlock_untried is None)),
        ("groups", "groups",
         lambda: judge_groups(user["uid"], [g for g in ("audio", "realtime")
                                            if g in user["groups"]],
                              _existing_groups(("audio", "realtime")), realtime_ok)),
        ("kernel-preempt", "kernel preemption",
         lambda: judge_preempt(version, realtime_flag, cmdline, config,
                               _read("/sys/kernel/debug/sched/preempt"))),
        ("threadirqs", "threadirqs", lambda: judge_threadirqs(cmdline, preempt_rt)),
        ("high-res-timers", "high resolution timers",
         lambda: judge_hrtimers(resolution(), config)),
        ("rt-throttling", "RT throttling",
         lambda: judge_throttling(_read_int("/proc/sys/kernel/sched_rt_runtime_us"),
                                  _read_int("/proc/sys/kernel/sched_rt_period_us"))),
        ("rt-group-budget", "RT group budget", lambda: judge_rt_budget(_rt.rt_budget())),
        ("cpu-governor", "CPU governor", lambda: judge_governor(governors)),
        ("smt", "SMT", lambda: judge_smt(_read("/sys/devices/system/cpu/smt/active"),
                                         _read("/sys/devices/system/cpu/smt/control"))),
        ("swappiness", "swappiness",
         lambda: judge_swappiness(_read_int("/proc/sys/vm/swappiness"))),
        ("cpu-dma-latency", "/dev/cpu_dma_latency",
         lambda: judge_dma_latency(os.path.exists(dma), os.access(dma, os.W_OK))),
        ("timer-slack", "timer slack", lambda: judge_timer_slack(slack(), realtime_ok)),
    ]
    checks = [_guard(check_id, title, func) for check_id, title, func in steps]
    summary = {status: sum(c.status == status for c in checks) for status in STATUSES}
    return {"version": __version__, "user": user, "summary": summary,
            "checks": [asdict(c) for c in checks]}


# ---- the report's shape, and its text -----------------------------------------------------


def _json_clean(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list):
        return all(_json_clean(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_clean(v) for k, v in value.items())
    return False


def validate_report(report: Any) -> list[str]:
    """Where ``report`` departs from :data:`REPORT_FIELDS` (an empty list: it conforms)."""
    problems: list[str] = []
    if not isinstance(report, dict):
        return ["the report is not an object"]
    if set(report) != set(REPORT_FIELDS):
        problems.append(f"top-level keys {sorted(report)} != {sorted(REPORT_FIELDS)}")
    if not isinstance(report.get("version"), str):
        problems.append("version is not a string")
    for part in ("user", "summary"):
        shape, value = REPORT_FIELDS[part], report.get(part)
        if not isinstance(value, dict) or set(value) != set(shape):
            problems.append(f"{part} does not have exactly {sorted(shape)}")
            continue
        for key, kind in shape.items():
            if not isinstance(value[key], kind) or isinstance(value[key], bool):
                problems.append(f"{part}.{key} is not {kind.__name__}")
    checks = report.get("checks")
    if not isinstance(checks, list):
        return [*problems, "checks is not a list"]
    shape = REPORT_FIELDS["checks"][0]
    for i, check in enumerate(checks):
        if not isinstance(check, dict) or set(check) != set(shape):
            problems.append(f"checks[{i}] does not have exactly {sorted(shape)}")
            continue
        for key, kind in shape.items():
            if not isinstance(check[key], kind):
                problems.append(f"checks[{i}].{key} has the wrong type")
        if check["status"] not in STATUSES:
            problems.append(f"checks[{i}].status {check['status']!r} is not one of {STATUSES}")
        if check["status"] in ("warn", "fail") and not check["fix"]:
            problems.append(f"checks[{i}] ({check['id']}) is {check['status']} without a fix")
        if not _json_clean(check["data"]):
            problems.append(f"checks[{i}].data holds a value JSON cannot carry")
    ids = [c.get("id") for c in checks if isinstance(c, dict)]
    if tuple(ids) != CHECK_IDS:
        problems.append(f"check ids {ids} != {list(CHECK_IDS)}")
    summary = report.get("summary")
    if isinstance(summary, dict) and set(summary) == set(STATUSES):
        counted = {s: sum(isinstance(c, dict) and c.get("status") == s for c in checks)
                   for s in STATUSES}
        if counted != summary:
            problems.append(f"summary {summary} does not count the checks {counted}")
    return problems


def format_report(report: dict[str, Any]) -> str:
    """The report as lines a person reads: one per check, a fix line under each problem."""
    user = report["user"]
    lines = [f"streamcore {report['version']} doctor: user {user['name']} (uid {user['uid']})"]
    width = max(len(c["id"]) for c in report["checks"])
    for c in report["checks"]:
        lines.append(f"{c['status'].upper():8}{c['id']:{width}}  {c['detail']}")
        if c["fix"] and c["status"] != "pass":
            lines.append(f"{'':8}{'':{width}}  fix: {c['fix']}")
    s = report["summary"]
    lines.append(f"summary: {s['pass']} pass, {s['warn']} warn, {s['fail']} fail, "
                 f"{s['unknown']} unknown")
    return "\n".join(lines)

