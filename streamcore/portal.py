"""The XDG desktop portal's Realtime interface over the session bus: limits and requests.

Sandboxed applications (Flatpak) cannot reach rtkit on the system bus, and rtkit could not
find their threads anyway: their ids belong to the sandbox's PID namespace.  xdg-desktop-portal
(``org.freedesktop.portal.Desktop`` on the session bus) offers ``org.freedesktop.portal.Realtime``:
it maps a Flatpak caller's pid and thread id to the host's (from the sandbox's
``bwrapinfo.json``), asks its permission store (table and id ``realtime``: an app set to 'no'
is refused with ``org.freedesktop.portal.Error.NotAllowed``) and forwards the request to rtkit,
whose limits it publishes as its own properties.  rtkit's own refusals come back unchanged.

A caller that is not a Flatpak app is passed through unmapped, so outside a sandbox the portal
is one more hop to the same rtkit.  The portal opens ``/proc/PID/root`` of its caller: a
process that is not dumpable (it changed its user ids without exec) is refused with
"Unable to open /proc/PID/root".

Every function takes the bus connection (:class:`~streamcore.bus.BusConnection` with
``session=True``), whose deadline bounds the calls.
"""

from __future__ import annotations

import os

from jeepney import DBusAddress, new_method_call

from streamcore import rtkit as _rtkit
from streamcore.bus import BusConnection, BusError

__all__ = [
    "PORTAL",
    "PORTAL_NAME",
    "explain",
    "flatpak_app",
    "make_thread_high_priority",
    "make_thread_realtime",
    "read_limits",
]

PORTAL_NAME = "org.freedesktop.portal.Desktop"
PORTAL = DBusAddress(
    "/org/freedesktop/portal/desktop",
    bus_name=PORTAL_NAME,
    interface="org.freedesktop.portal.Realtime",
)


def flatpak_app(path: str = "/.flatpak-info") -> str | None:
    """The app id when this process runs in a Flatpak sandbox (``[Application] name=`` of
    /.flatpak-info); "" for a sandbox whose info names none; None outside Flatpak."""
    try:
        with open(path) as info:
            text = info.read()
    except OSError:
        return None
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Application" and line.startswith("name="):
            return line.split("=", 1)[1].strip()
    return ""


def read_limits(bus: BusConnection) -> _rtkit.RtkitLimits:
    """The portal's MaxRealtimePriority, MinNiceLevel and RTTimeUSecMax (rtkit's, as the
    portal read them when it started: 0 when it found no rtkit).

    Raises
    ------
    BusError
        No portal on the bus, or it lacks the Realtime interface.
    """
    def prop(name: str) -> int | None:
        try:
            return int(bus.get_property(PORTAL, name))
        except BusError as e:
            if e.name in _rtkit.MISSING_PROPERTY:
                return None
            raise
    return _rtkit.RtkitLimits(max_realtime_priority=prop("MaxRealtimePriority"),
                              min_nice_level=prop("MinNiceLevel"),
                              rttime_usec_max=prop("RTTimeUSecMax"))


def make_thread_realtime(bus: BusConnection, tid: int, priority: int,
                         pid: int | None = None) -> None:
    """Ask the portal to make thread ``tid`` of ``pid`` (default: this process, by the ids
    it has here: the portal maps a Flatpak caller's) SCHED_RR at ``priority``.  The caller
    sets a finite hard RLIMIT_RTTIME first (rtkit checks it)."""
    bus.call(new_method_call(PORTAL, "MakeThreadRealtimeWithPID", "ttu",
                             (pid or os.getpid(), tid, priority)))


def make_thread_high_priority(bus: BusConnection, tid: int, nice: int,
                              pid: int | None = None) -> None:
    """Ask the portal to give thread ``tid`` of ``pid`` (default: this process) nice
    ``nice``."""
    bus.call(new_method_call(PORTAL, "MakeThreadHighPriorityWithPID", "tti",
                             (pid or os.getpid(), tid, nice)))


def explain(error: BusError, *, priority: int | None = None,
            limits: _rtkit.RtkitLimits | None = None, rttime_hard_us: int | None = None,
            budget: tuple[str, int] | None = None) -> str:
    """One sentence: what a portal failure most likely means and how to fix it.  rtkit's
    own answers, which the portal passes on, are explained as :func:`streamcore.rtkit.explain`
    does (with the same keyword arguments)."""
    name, text = error.name, str(error.args[1])
    if name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                "org.freedesktop.DBus.Error.NameHasNoOwner"):
        return ("no xdg-desktop-portal on the session bus (no owner of "
                f"{PORTAL_NAME}): install and start xdg-desktop-portal")
    if name in ("org.freedesktop.DBus.Error.UnknownInterface",
                "org.freedesktop.DBus.Error.UnknownMethod",
                "org.freedesktop.DBus.Error.UnknownObject"):
        return f"this xdg-desktop-portal has no Realtime interface ({text}): it needs 1.12 or later"
    if name == "streamcore.NoBus":
        return f"no session bus to ask the portal: {text}"
    if name == "streamcore.Timeout":
        return f"the session bus or the portal did not answer in time ({text})"
    if name == "org.freedesktop.portal.Error.NotAllowed":
        app = flatpak_app()
        which = f"app '{app}'" if app else "this app"
        return (f"the portal refused: its permission store says no for {which} (table "
                f"'realtime'): allow it, e.g. `flatpak permission-set realtime realtime "
                f"{app or 'APP_ID'} yes`")
    if name == "org.freedesktop.portal.Error.Failed" and "RealtimeKit" in text:
        return (f"the portal has no RealtimeKit behind it ({text}): rtkit-daemon must run "
                "on the system bus the portal uses (restart the portal after starting it)")
    if "/proc/" in text and "root" in text:
        return (f"the portal could not look at this process ({text}): a process that changed "
                "its user ids without exec is not dumpable; prctl(PR_SET_DUMPABLE, 1) "
                "makes it so")
    return "the portal passed on rtkit's answer: " + _rtkit.explain(
        error, priority=priority, limits=limits, rttime_hard_us=rttime_hard_us, budget=budget)
