"""`streamcore doctor`: is this machine, for this user, ready for realtime audio?

Like rtcqs, and more: each check ends as ``pass``, ``warn``, ``fail`` or ``unknown`` (a fact
that could not be read, with why; e.g. no cpufreq in a VM) with a one-line fix.  The realtime
check really tries: a native scratch thread is promoted with :func:`acquire_realtime`, a child
forked from it must start SCHED_OTHER, then the thread is demoted and stopped.  The
audio-server check finds the server a JACK client of this process reaches (JACK2, or PipeWire
through pipewire-jack) or PipeWire's own socket, the server's pid (SO_PEERCRED on its socket)
and whether any of its threads runs realtime; it never starts a server.

Each check reads its facts (I/O) and hands them to a ``judge_*`` function (data only), so the
verdicts are tested on data and a missing file is never a crash.  Every bus step is bounded by
``timeout`` (the realtime try, rtkit's properties and polkit's answers: at most about three
times ``timeout`` in all; the audio server's sockets and libjack client add at most three
more).  As the rtkit path requires, trying realtime lowers this process's
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
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import prctl

from streamcore import _facts
from streamcore import jackprobe as _jackprobe
from streamcore import pidns as _pidns
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
    "realtime", "rtkit", "polkit", "sandbox", "portal", "rlimit-rtprio", "rlimit-memlock",
    "rlimit-rttime", "capabilities", "groups", "audio-server", "kernel-preempt", "threadirqs",
    "high-res-timers", "rt-throttling", "rt-group-budget", "cpu-governor", "smt", "swappiness",
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


# ---- reading facts: the audio server ------------------------------------------------------
#
# Which server a JACK client of this process reaches, found the way such a client finds it:
# libjack.so.0 is the library PortAudio's JACK host loads (JACK2's, or PipeWire's
# pipewire-jack when LD_LIBRARY_PATH puts that first, as `pw-jack` does); JACK2's server
# listens on /dev/shm/jack_<name>_<euid>_0 (jackd 1.9.21 on Linux; jack_<name>_0 with
# JACK_PROMISCUOUS_SERVER), PipeWire on $PIPEWIRE_RUNTIME_DIR or $XDG_RUNTIME_DIR /
# ($PIPEWIRE_REMOTE or pipewire-0).  A socket that accepts gives its server's pid by
# SO_PEERCRED (the listener's credentials, even when the server is too busy to accept), so
# a server that hangs is found without waiting on it; a libjack client is opened only when
# a socket accepted, never starts a server, and is waited for at most ``timeout``.

_JACK_SOCKET_DIRS = ("/dev/shm", "/tmp")  # JACK2's JACK_SOCKET_DIR: /dev/shm on Linux builds
_POLICIES = {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline"}
_REALTIME_POLICIES = ("fifo", "rr", "deadline")


def thread_scheduling(stat: str) -> tuple[str, int]:
    """(policy, realtime priority) of a thread from its /proc/PID/task/TID/stat line.

    The command name (field 2) may hold spaces and parentheses: fields are counted after its
    last ')'.  policy is field 41, rt_priority field 40 (proc(5))."""
    fields = stat[stat.rindex(")") + 2:].split()
    policy = int(fields[41 - 3])
    return _POLICIES.get(policy, str(policy)), int(fields[40 - 3])


def _unix_peer(path: str, timeout: float) -> dict[str, Any]:
    """Who listens on the unix socket ``path``: {"socket", "listening", "pid", "uid",
    "error"}.  A server whose queue of unaccepted connections is full (it hangs) is listening
    with pid None; an absent or stale socket is not listening."""
    found: dict[str, Any] = {"socket": path, "listening": False, "pid": None, "uid": None,
                             "error": None}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        found["pid"], found["uid"], _gid = struct.unpack("3i", creds)
        found["listening"] = True
    except FileNotFoundError:
        found["error"] = f"no socket {path}"
    except ConnectionRefusedError:
        found["error"] = f"{path}: nothing listens (a stale socket of a server that died)"
    except (BlockingIOError, TimeoutError):  # unix sockets say EAGAIN at once
        found["listening"] = True
        found["error"] = (f"{path}: its queue of unaccepted connections is full: the server "
                          "accepts none (hung?)")
    except OSError as e:
        found["error"] = f"{path}: {e.strerror or e}"
    finally:
        sock.close()
    return found


def _jack_socket(timeout: float) -> dict[str, Any]:
    """JACK2's server socket for $JACK_DEFAULT_SERVER (or 'default'), as _unix_peer, plus
    "name"."""
    name = os.environ.get("JACK_DEFAULT_SERVER") or "default"
    leaf = (f"jack_{name}_0" if "JACK_PROMISCUOUS_SERVER" in os.environ else
            f"jack_{name}_{os.geteuid()}_0")
    paths = [os.path.join(d, leaf) for d in _JACK_SOCKET_DIRS]
    existing = [p for p in paths if os.path.exists(p)]
    if not existing:
        return {"name": name, "socket": None, "listening": False, "pid": None, "uid": None,
                "error": f"no socket {leaf} in {' or '.join(_JACK_SOCKET_DIRS)}"}
    return {"name": name, **_unix_peer(existing[0], timeout)}


def _pipewire_socket(timeout: float) -> dict[str, Any]:
    """PipeWire's native socket, as _unix_peer."""
    remote = os.environ.get("PIPEWIRE_REMOTE") or "pipewire-0"
    folder = os.environ.get("PIPEWIRE_RUNTIME_DIR") or os.environ.get("XDG_RUNTIME_DIR")
    if not remote.startswith("/") and not folder:
        return {"socket": None, "listening": False, "pid": None, "uid": None,
                "error": "neither PIPEWIRE_RUNTIME_DIR nor XDG_RUNTIME_DIR is set"}
    return _unix_peer(os.path.join(folder or "/", remote), timeout)


def _server_threads(pid: int | None) -> dict[str, Any]:
    """The scheduling of process ``pid``'s threads: {"threads" (how many were read),
    "realtime_threads" ([tid, policy, priority] of the SCHED_FIFO/RR/DEADLINE ones; None
    when unreadable), "threads_error"}."""
    if pid is None:
        return {"threads": None, "realtime_threads": None,
                "threads_error": "the server's pid is not known"}
    if pid == 0:
        return {"threads": None, "realtime_threads": None,
                "threads_error": "the server runs in another PID namespace (SO_PEERCRED gave "
                                 "pid 0): its threads are not visible from here"}
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError as e:
        return {"threads": None, "realtime_threads": None,
                "threads_error": f"/proc/{pid}/task: {e.strerror or e}"}
    realtime: list[list[Any]] = []
    read = 0
    for tid in tids:
        stat = _read(f"/proc/{pid}/task/{tid}/stat")
        if stat is None:  # the thread ended since the listing
            continue
        read += 1
        policy, priority = thread_scheduling(stat)
        if policy in _REALTIME_POLICIES:
            realtime.append([tid, policy, priority])
    if read == 0:
        return {"threads": 0, "realtime_threads": None,
                "threads_error": f"no thread of pid {pid} could be read in /proc"}
    return {"threads": read, "realtime_threads": realtime, "threads_error": None}


def audio_server_facts(timeout: float) -> dict[str, Any]:
    """Which audio server a JACK client of this process reaches, or PipeWire's socket, and
    its realtime threads; the data of :func:`judge_audio_server`.

    Keys: server ('jack2' | 'pipewire' | None), via ('libjack' | 'socket' | None), pid,
    process (its command name), period, samplerate (frames, Hz: from a libjack client),
    version (libjack's version string: JACK2's, or pipewire-jack's naming PipeWire's),
    threads, realtime_threads ([tid, policy, priority]), threads_error, problem (a server
    that accepted a connection but did not answer a client), also (the other server kind
    found, if any), and the probes behind them: libjack, jack_socket, pipewire_socket.

    Bounded: each socket connection and the libjack client wait at most ``timeout``; no
    server is started.  Any thread; the libjack client is opened and closed again.
    """
    libjack = _jackprobe.libjack_facts()
    jack_socket = _jack_socket(timeout)
    pipewire_socket = _pipewire_socket(timeout)
    facts: dict[str, Any] = {
        "server": None, "via": None, "pid": None, "process": None, "period": None,
        "samplerate": None, "version": None, "problem": None, "also": None,
        "libjack": libjack, "jack_socket": jack_socket, "pipewire_socket": pipewire_socket}
    jack_up, pipewire_up = jack_socket["listening"], pipewire_socket["listening"]
    # The server a JACK client (PortAudio's JACK host) reaches comes first.
    if libjack["flavour"] == "pipewire" and pipewire_up:
        server, found, also = "pipewire", pipewire_socket, "jack2" if jack_up else None
    elif jack_up:
        server, found, also = "jack2", jack_socket, "pipewire" if pipewire_up else None
    elif pipewire_up:
        server, found, also = "pipewire", pipewire_socket, None
    else:
        return {**facts, "threads": None, "realtime_threads": None, "threads_error": None}
    facts.update(server=server, via="socket", pid=found["pid"], also=also)
    if found["pid"] is None:  # it listens but accepts nothing: a client would hang too
        facts["problem"] = found["error"]
    elif libjack["flavour"] == server:
        client = _jackprobe.jack_server_facts(timeout)
        if client["error"] is None:
            facts.update(via="libjack", period=client["period"],
                         samplerate=client["samplerate"], version=libjack["version"])
        else:
            facts["problem"] = client["error"]
    if found["pid"]:
        facts["process"] = _read(f"/proc/{found['pid']}/comm")
    facts.update(_server_threads(found["pid"]))
    return facts


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
    if method in ("rtkit-nice", "portal-nice", "nice"):
        return Check("realtime", title, "warn",
                     f"no realtime, only nice {grant['nice']} via {method}", fix, data)
    return Check("realtime", title, "fail", "no realtime and no raised priority", fix, data)


#: rtkit-daemon's canary when its command line says nothing (rtkit's own defaults)
RTKIT_CANARY_DEFAULTS = {"cheep_ms": 5000, "watchdog_ms": 10000, "refuse_s": 300}
_CANARY_OPTIONS = {"--canary-cheep-msec": "cheep_ms", "--canary-watchdog-msec": "watchdog_ms",
                   "--canary-refuse-sec": "refuse_s"}


def rtkit_canary(argv: list[str]) -> dict[str, Any]:
    """rtkit-daemon's canary settings from its command line (``argv``, as in
    /proc/PID/cmdline): ``enabled``, ``cheep_ms``, ``watchdog_ms``, ``refuse_s``."""
    out: dict[str, Any] = {"enabled": True, **RTKIT_CANARY_DEFAULTS}
    words = iter(argv[1:])
    for word in words:
        if word == "--no-canary":
            out["enabled"] = False
            continue
        name, sep, value = word.partition("=")
        if name in _CANARY_OPTIONS:
            if not sep:
                value = next(words, "")
            with contextlib.suppress(ValueError):
                out[_CANARY_OPTIONS[name]] = int(value)
    return out


def rtkit_daemon_canary() -> dict[str, Any] | None:
    """The running rtkit-daemon's canary (its pid and :func:`rtkit_canary`); None when no
    rtkit-daemon is found or its command line cannot be read."""
    for entry in glob.glob("/proc/[0-9]*"):
        if _read(f"{entry}/comm") != "rtkit-daemon":
            continue
        try:
            with open(f"{entry}/cmdline", "rb") as f:
                argv = [w.decode(errors="replace") for w in f.read().split(b"\0") if w]
        except OSError:
            return None
        return {"pid": int(os.path.basename(entry)), **rtkit_canary(argv)}
    return None


def judge_rtkit(limits: dict[str, Any] | None, error: str | None, realtime_method: str | None,
                address: str, canary: dict[str, Any] | None = None) -> Check:
    title = "RealtimeKit on the system bus"
    data = {"bus": address, "limits": limits, "error": error, "canary": canary}
    if limits is None:
        needed = realtime_method not in ("direct",)
        return Check("rtkit", title, "fail" if needed else "warn", f"no answer: {error}",
                     "install the 'rtkit' package and make sure rtkit-daemon and the system bus "
                     "run" + ("" if needed else " (not needed here: direct realtime works)"),
                     data)
    problems = _rtkit.RtkitLimits(**limits).problems()
    detail = (f"MaxRealtimePriority {limits['max_realtime_priority']}, MinNiceLevel "
              f"{limits['min_nice_level']}, RTTimeUSecMax {limits['rttime_usec_max']} µs")
    if canary is not None:
        detail += ("; canary off" if not canary["enabled"] else
                   f"; its canary demotes every grant when starved {canary['watchdog_ms']} ms "
                   f"and refuses for {canary['refuse_s']} s after (Engine(reacquire=...) "
                   f"asks again)")
    if problems:
        return Check("rtkit", title, "fail", detail + ": " + ", ".join(problems),
                     "fix rtkit-daemon's options (--max-realtime-priority, --rttime-usec-max)",
                     data)
    return Check("rtkit", title, "pass", detail, None, data)


def sandbox_facts(timeout: float) -> dict[str, Any]:
    """Whether this process runs sandboxed: Flatpak's /.flatpak-info, a container's marker
    file, and a PID namespace (the system bus sees another pid than ours; NSpid shows
    whether /proc still names our threads by the host's ids)."""
    from streamcore.bus import BusConnection

    flatpak = None
    info = _read("/.flatpak-info")
    if info is not None:
        app = [line.split("=", 1)[1].strip() for line in info.splitlines()
               if line.startswith("name=")]
        flatpak = app[0] if app else "(unnamed)"
    container = next((p for p in ("/.dockerenv", "/run/.containerenv") if os.path.exists(p)),
                     None)
    bus_pid, bus_error = None, None
    try:
        with BusConnection(timeout) as bus:
            bus_pid = bus.own_pid()
    except BusError as e:
        bus_error = str(e)
    return {"flatpak": flatpak, "container": container, "pid": os.getpid(),
            "bus_pid": bus_pid, "bus_error": bus_error, "nspid": list(_pidns.nspid())}


def judge_sandbox(facts: dict[str, Any]) -> Check:
    title = "sandbox and PID namespace"
    pid, bus_pid, nspid = facts["pid"], facts["bus_pid"], facts["nspid"]
    namespaced = bus_pid is not None and bus_pid != pid
    if facts["flatpak"] is not None:
        return Check("sandbox", title, "pass",
                     f"Flatpak sandbox (app {facts['flatpak']}): rtkit cannot see its threads, "
                     "so realtime is asked of the XDG portal first (see the portal check)",
                     None, facts)
    if namespaced and len(nspid) > 1:
        return Check("sandbox", title, "pass",
                     f"PID namespace (pid {pid} here, {bus_pid} for the system bus); /proc "
                     "shows the host's ids, so rtkit is asked with them", None, facts)
    if namespaced:
        return Check("sandbox", title, "warn",
                     f"PID namespace with its own /proc (pid {pid} here, {bus_pid} for the "
                     "system bus): rtkit can promote only the main thread, not the mixer, and "
                     "the XDG portal maps the ids of Flatpak apps only",
                     "run outside the namespace, or keep the host's /proc in it (unshare "
                     "--pid --fork without --mount-proc), or run as a Flatpak app", facts)
    where = f" (container: {facts['container']})" if facts["container"] else ""
    unknown = " (the system bus could not be asked)" if bus_pid is None else ""
    return Check("sandbox", title, "pass", f"not sandboxed{where}{unknown}", None, facts)


def sandboxed(facts: dict[str, Any]) -> bool:
    """Whether :func:`sandbox_facts` describe a sandbox (Flatpak, or a PID namespace)."""
    return (facts["flatpak"] is not None or len(facts["nspid"]) > 1
            or (facts["bus_pid"] is not None and facts["bus_pid"] != facts["pid"]))


def portal_facts(timeout: float) -> dict[str, Any]:
    """The session bus (found as the engine finds it) and the XDG portal's Realtime
    interface on it: whether it runs and the limits it publishes."""
    from streamcore import portal as _portal
    from streamcore.bus import BusConnection, session_bus_address

    facts: dict[str, Any] = {"address": session_bus_address(), "error": None,
                             "portal": False, "limits": None}
    try:
        with BusConnection(timeout, session=True) as bus:
            facts["portal"] = bus.has_owner(_portal.PORTAL_NAME)
            if facts["portal"]:
                facts["limits"] = asdict(_portal.read_limits(bus))
    except BusError as e:
        facts["error"] = _portal.explain(e)
    return facts


def judge_portal(facts: dict[str, Any], in_sandbox: bool) -> Check:
    title = "XDG portal (realtime for sandboxed apps)"
    needed = "needed: this process is sandboxed" if in_sandbox else \
        "not needed outside a sandbox: rtkit is asked directly"
    fix_bus = ("run inside a desktop session (DBUS_SESSION_BUS_ADDRESS or $XDG_RUNTIME_DIR/bus), "
               "with xdg-desktop-portal installed")
    if facts["error"] is not None or not facts["portal"]:
        what = facts["error"] or (f"no xdg-desktop-portal on the session bus at "
                                  f"{facts['address']}")
        return Check("portal", title, "fail" if in_sandbox else "pass", f"{what} ({needed})",
                     fix_bus if in_sandbox else None, facts)
    limits = facts["limits"]
    if not limits["max_realtime_priority"] or not limits["rttime_usec_max"]:
        return Check("portal", title, "fail" if in_sandbox else "warn",
                     "the portal publishes no realtime limits: it found no RealtimeKit when it "
                     f"started ({needed})",
                     "start rtkit-daemon on the system bus, then restart xdg-desktop-portal",
                     facts)
    return Check("portal", title, "pass",
                 f"the portal allows SCHED_RR up to priority {limits['max_realtime_priority']}, "
                 f"nice down to {limits['min_nice_level']}, RLIMIT_RTTIME up to "
                 f"{limits['rttime_usec_max']} µs ({needed})", None, facts)


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


PAM_LIMITS = ("/etc/security/limits.conf", "/etc/security/limits.d/*.conf")


def pam_rttime(user: str, groups: list[str],
               patterns: tuple[str, ...] = PAM_LIMITS) -> list[dict[str, str]]:
    """The ``rttime`` lines of pam_limits' files that apply to ``user`` (by name, by one of
    ``groups`` as ``@group``, or ``*``), in the order pam_limits reads them.

    Returns
    -------
    list of dict
        ``file``, ``domain``, ``type`` ('soft', 'hard' or '-'), ``value`` (µs or
        'unlimited'), each as written.
    """
    out: list[dict[str, str]] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            text = _read(path)
            for line in (text or "").splitlines():
                words = line.split("#", 1)[0].split()
                if len(words) != 4 or words[2] != "rttime":
                    continue
                domain = words[0]
                if domain in (user, "*") or (domain.startswith("@") and domain[1:] in groups):
                    out.append({"file": path, "domain": domain, "type": words[1],
                                "value": words[3]})
    return out


def judge_rttime(limit: dict[str, int | None], rttime_usec_max: int | None,
                 pam: list[dict[str, str]] | None = None) -> Check:
    title = "RLIMIT_RTTIME"
    soft, hard = limit["soft"], limit["hard"]
    detail = f"soft {_text(soft, ' µs')}, hard {_text(hard, ' µs')}"
    if pam:
        detail += " (pam_limits: " + ", ".join(
            f"{p['type']} {p['value']} for {p['domain']} in {p['file']}" for p in pam) + ")"
    data = {**limit, "rtkit_rttime_usec_max": rttime_usec_max, "pam": pam or []}
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


_SERVER_NAMES = {"jack2": "JACK2", "pipewire": "PipeWire"}
_SERVER_REALTIME_FIX = {
    "jack2": "restart jackd with -R (realtime; jackd2's default unless --no-realtime) as a user "
             "allowed realtime: '@audio - rtprio 95' in /etc/security/limits.d/audio.conf, or "
             "rtkit",
    "pipewire": "let PipeWire's module-rt get realtime: rtkit on the system bus with a polkit "
                "rule for the user, or '@pipewire - rtprio 95' in /etc/security/limits.d and "
                "the user in group pipewire",
}
PIPEWIRE_XRUNS_NOTE = ("PipeWire tells clients of no xrun: the device sink counts its "
                       "missed cycles by running pw-profiler (pipewire-bin) while it plays; "
                       "pw-top shows them too")


def judge_audio_server(facts: dict[str, Any]) -> Check:
    """The audio server (see :func:`audio_server_facts` for the keys of ``facts``): pass when
    one runs with realtime threads, warn when it runs without, when it hangs or when there is
    none (streamcore still plays to the null sink, a file or a pipe)."""
    title = "audio server and its realtime threads"
    server = facts["server"]
    data = {**facts, "xruns_visible": None if server is None else server != "pipewire"}
    if server is None:
        jack, pipewire = facts["jack_socket"], facts["pipewire_socket"]
        return Check("audio-server", title, "warn",
                     f"no audio server: JACK '{jack['name']}': {jack['error']}; "
                     f"PipeWire: {pipewire['error']}",
                     "start one (jackd -R -d alsa, or PipeWire), or play without one: "
                     "sink='null', a FileSink or a PipeSink (`streamcore play --null`, "
                     "`--out FILE`, `--pipe`)", data)
    name = _SERVER_NAMES[server]
    head = f"{name}, pid {facts['pid'] or 'unknown'}"
    head += f" ({facts['process']})" if facts["process"] else ""
    if facts["period"]:
        head += f", period {facts['period']} frames"
        head += f" at {facts['samplerate']} Hz" if facts["samplerate"] else ""
    head += f", via {facts['via']}"
    notes = []
    flavour = facts["libjack"]["flavour"]
    if flavour is not None and flavour != server:
        notes.append(f"JACK clients here load {_SERVER_NAMES[flavour]}'s libjack, which does "
                     f"not reach {name}")
    if facts["also"]:
        notes.append(f"{_SERVER_NAMES[facts['also']]} runs too")
    if server == "pipewire":
        notes.append(PIPEWIRE_XRUNS_NOTE)
        data["note"] = PIPEWIRE_XRUNS_NOTE
    tail = "".join(f"; {note}" for note in notes)
    if facts["problem"]:
        return Check("audio-server", title, "warn", f"{head}: {facts['problem']}{tail}",
                     f"restart {name}" + (f" (pid {facts['pid']})" if facts["pid"] else "")
                     + ": it does not answer its clients",
                     data)
    threads = facts["realtime_threads"]
    if threads is None:
        return Check("audio-server", title, "unknown",
                     f"{head}: realtime unknown, {facts['threads_error']}{tail}",
                     "run doctor as root or as the server's user, where its pid is visible",
                     data)
    if not threads:
        return Check("audio-server", title, "warn",
                     f"{head}: none of its {facts['threads']} threads runs realtime{tail}",
                     _SERVER_REALTIME_FIX[server], data)
    kinds = sorted({f"SCHED_{policy.upper()} {priority}" for _tid, policy, priority in threads})
    return Check("audio-server", title, "pass",
                 f"{head}: {', '.join(kinds)} on {len(threads)} of {facts['threads']} "
                 f"threads{tail}", None, data)


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
    sandbox: dict[str, Any] = {}

    def sandbox_once() -> dict[str, Any]:  # one bus round for both checks that need it
        if not sandbox:
            sandbox.update(sandbox_facts(timeout))
        return sandbox

    steps: list[tuple[str, str, Callable[[], Check]]] = [
        ("realtime", "realtime", lambda: judge_realtime(grant, child, rt_error)),
        ("rtkit", "rtkit", lambda: judge_rtkit(limits, rtkit_error, method,
                                                system_bus_address(), rtkit_daemon_canary())),
        ("polkit", "polkit", lambda: judge_polkit(answers, polkit_error, method)),
        ("sandbox", "sandbox and PID namespace", lambda: judge_sandbox(sandbox_once())),
        ("portal", "XDG portal",
         lambda: judge_portal(portal_facts(timeout), sandboxed(sandbox_once()))),
        ("rlimit-rtprio", "RLIMIT_RTPRIO",
         lambda: judge_rtprio(rtprio, caps["CAP_SYS_NICE"] if caps else None)),
        ("rlimit-memlock", "RLIMIT_MEMLOCK",
         lambda: judge_memlock(memlock, caps["CAP_IPC_LOCK"] if caps else None,
                               locked_bytes, memlock_probe, memlock_untried)),
        ("rlimit-rttime", "RLIMIT_RTTIME",
         lambda: judge_rttime(rttime, limits["rttime_usec_max"] if limits else None,
                              pam_rttime(user["name"], user["groups"]))),
        ("capabilities", "capabilities",
         lambda: judge_capabilities(caps, caps_error, realtime_ok,
                                    memlock_probe is None and memlock_untried is None)),
        ("groups", "groups",
         lambda: judge_groups(user["uid"], [g for g in ("audio", "realtime")
                                            if g in user["groups"]],
                              _existing_groups(("audio", "realtime")), realtime_ok)),
        ("audio-server", "audio server",
         lambda: judge_audio_server(audio_server_facts(timeout))),
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

