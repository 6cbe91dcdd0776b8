"""Each service fixture proves it gives the real thing."""

from __future__ import annotations

import errno
import os
import resource
import threading
import time

import numpy as np
import sounddevice as sd

from streamcore import rtkit
from streamcore.bus import BusError


def _capabilities_effective() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise AssertionError("no CapEff line in /proc/self/status")


def _try_fifo() -> int:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError as e:
        return e.errno
    return 0


def _identity() -> dict:
    return {"uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups(),
            "cap_eff": _capabilities_effective(),
            "rtprio": resource.getrlimit(resource.RLIMIT_RTPRIO), "fifo": _try_fifo()}


def _rtkit_promote_self(priority: int) -> dict:
    resource.setrlimit(resource.RLIMIT_RTTIME, (200_000, 200_000))
    tid = threading.get_native_id()
    try:
        rtkit.make_thread_realtime(tid, priority, timeout=5)
    except BusError as e:
        return {"error": e.name}
    return {"policy": os.sched_getscheduler(0), "priority": os.sched_getparam(0).sched_priority}


class TestUnprivileged:
    """The unprivileged fixture runs code as a real user without privileges."""

    def test_drops_user_capabilities_and_rtprio(self, unprivileged):
        """The child is the test user, has no capabilities, RLIMIT_RTPRIO 0, and cannot
        get SCHED_FIFO by itself."""
        ident = unprivileged.run(_identity).unwrap()
        assert ident["uid"] == ident["euid"] == unprivileged.member.pw_uid != 0
        assert ident["cap_eff"] == 0
        assert ident["rtprio"] == (0, 0)
        assert ident["fifo"] == errno.EPERM
        assert unprivileged.rt_gid in ident["groups"]

    def test_outside_the_group(self, unprivileged):
        """in_rt_group=False leaves out the group that polkit allows."""
        ident = unprivileged.run(_identity, in_rt_group=False).unwrap()
        assert ident["uid"] == unprivileged.outsider.pw_uid
        assert unprivileged.rt_gid not in ident["groups"]

    def test_child_errors_come_back(self, unprivileged):
        """An exception in the child is reported with its traceback."""
        outcome = unprivileged.run(int, "not a number")
        assert outcome.error is not None and "ValueError" in outcome.error


class TestRtkitBus:
    """The rtkit fixture is a real rtkit behind a real polkit on a private system bus."""

    def test_limits_are_rtkits_defaults(self, rtkit_bus):
        """rtkit's three properties read over the bus."""
        limits = rtkit.read_limits(timeout=5)
        assert limits.max_realtime_priority == 20
        assert limits.min_nice_level == -15
        assert limits.rttime_usec_max == 200_000

    def test_grants_sched_rr_to_the_unprivileged_user(self, rtkit_bus, unprivileged):
        """A user in the allowed group gets SCHED_RR with SCHED_RESET_ON_FORK from rtkit."""
        result = unprivileged.run(_rtkit_promote_self, 5).unwrap()
        assert "error" not in result, rtkit_bus.logs()
        assert result["policy"] == os.SCHED_RR | os.SCHED_RESET_ON_FORK
        assert result["priority"] == 5

    def test_polkit_refuses_outside_the_group(self, rtkit_bus, unprivileged):
        """Without the group, polkit says no and rtkit answers AccessDenied."""
        result = unprivileged.run(_rtkit_promote_self, 5, in_rt_group=False).unwrap()
        assert result == {"error": "org.freedesktop.DBus.Error.AccessDenied"}


class TestJack:
    """The JACK fixture is a sound device that PortAudio plays to and that advances."""

    def test_stream_advances(self, jack_server):
        """An output stream on the JACK device is called back for about a second's frames."""
        frames = []

        def callback(outdata, count, time_info, status):
            outdata.fill(0)
            frames.append(count)

        with sd.OutputStream(device=jack_server.device, samplerate=jack_server.samplerate,
                             channels=2, dtype="float32", callback=callback):
            time.sleep(1.0)
        total = int(np.sum(frames))
        # The dummy backend is clocked: about samplerate frames in one second.
        assert 0.5 * jack_server.samplerate < total < 2 * jack_server.samplerate
