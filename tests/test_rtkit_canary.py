"""rtkit's canary takes realtime away, the engine takes it back (issue 18).

The suite's own rtkit-daemon is started for this module with a short canary (cheep every
100 ms, alarm after 300 ms silent, no refuse period: ``--canary-refuse-sec=0``), and its
canary thread is frozen with ptrace (PTRACE_SEIZE + PTRACE_INTERRUPT) for a second: rtkit
then believes the system starves and demotes every thread it ever granted, as it does after
a suspend and resume.  The engine runs as the unprivileged test user (its mixer and watchdog
got SCHED_RR from rtkit) and must report the loss (event, taint, count) and, with
``reacquire`` on, be realtime again afterwards; with 'never' it stays demoted and says so.
(Only one rtkit-daemon may run per machine: this module's fixture is the suite's rtkit,
started with other options, holding the same machine lock.)
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import shutil
import tempfile
import threading
import time

import pytest

from tests.services.common import wait_until
from tests.services.rtkit import rtkit_bus_in_use

CANARY = ("--canary-cheep-msec=100", "--canary-watchdog-msec=300", "--canary-refuse-sec=0")
FREEZE_S = 1.0
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 17
WALL = 0x40000000


@pytest.fixture(scope="module")
def canary_bus():
    with rtkit_bus_in_use(CANARY) as trio:
        yield trio


def _canary_thread(rtkit_pid: int) -> int:
    """rtkit-daemon's canary: the thread that is neither its main thread nor realtime."""
    for task in sorted(os.listdir(f"/proc/{rtkit_pid}/task"), key=int):
        tid = int(task)
        if tid != rtkit_pid and os.sched_getscheduler(tid) == os.SCHED_OTHER:
            return tid
    raise AssertionError(f"rtkit-daemon {rtkit_pid} has no canary thread")


def _freeze(tid: int, seconds: float) -> None:
    """Stop thread ``tid`` of another process for ``seconds`` (ptrace, no signal)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    if libc.ptrace(PTRACE_SEIZE, tid, None, None) != 0:
        raise OSError(ctypes.get_errno(), f"PTRACE_SEIZE of {tid}")
    try:
        if libc.ptrace(PTRACE_INTERRUPT, tid, None, None) != 0:
            raise OSError(ctypes.get_errno(), f"PTRACE_INTERRUPT of {tid}")
        os.waitpid(tid, WALL)  # it is stopped now
        time.sleep(seconds)
    finally:
        libc.ptrace(PTRACE_DETACH, tid, None, None)


def _engine_through_the_canary(marker: str, policy: str) -> dict:
    """As the test user: an engine whose mixer rtkit promotes; the parent freezes rtkit's
    canary once the marker file names the mixer; wait for what the engine reports."""
    import streamcore

    seen: list = []
    with streamcore.Engine(sink="null", reacquire=policy) as engine:
        grant = engine.grant
        engine.subscribe(seen.append)
        pathlib.Path(marker).write_text(str(engine.mixer_tid))
        want = {"lost_realtime"} | (set() if policy == "never" else {"realtime_regained"})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not want <= {e.reason for e in seen}:
            time.sleep(0.05)
        if policy == "never":
            time.sleep(2.0)  # when an attempt would have come
        stats = engine.stats()
        now = streamcore.current_scheduling(engine.mixer_tid)
    return {"grant": grant.method if grant else None,
            "events": [(e.reason, e.policy_before, e.result, e.threads) for e in seen],
            "taints": sorted(stats.taints), "losses": stats.realtime_losses,
            "reacquire": stats.reacquire, "now": now.policy}


def _run(canary_bus, unprivileged, policy: str) -> dict:
    folder = tempfile.mkdtemp(prefix="streamcore-canary-")
    os.chmod(folder, 0o777)  # the test user writes the marker
    marker = pathlib.Path(folder) / "mixer"
    rtkit_pid = canary_bus.services[-1].pid
    froze: list[float] = []

    def freezer() -> None:
        if wait_until(marker.exists, 30, 0.02):
            time.sleep(0.3)  # the engine's watchdog has looked at the granted mixer
            froze.append(time.monotonic())
            _freeze(_canary_thread(rtkit_pid), FREEZE_S)

    thread = threading.Thread(target=freezer)
    thread.start()
    try:
        return unprivileged.run(_engine_through_the_canary, str(marker), policy,
                                timeout=90).unwrap()
    finally:
        thread.join()
        shutil.rmtree(folder, ignore_errors=True)
        assert froze, "the engine never said it was running"


class TestRtkitCanary:
    def test_the_canary_demotes_and_the_engine_takes_realtime_back(self, canary_bus,
                                                                    unprivileged):
        got = _run(canary_bus, unprivileged, "backoff")
        assert got["grant"] == "rtkit", got
        lost = [e for e in got["events"] if e[0] == "lost_realtime"]
        assert len(lost) == 1, got
        _reason, before, now, threads = lost[0]
        assert before == os.SCHED_RR and now == os.SCHED_OTHER
        assert threads == 2, got  # rtkit took the watchdog's grant too
        assert "REALTIME_LOST" in got["taints"] and got["losses"] == 1
        assert any(e[0] == "realtime_regained" for e in got["events"]), got
        assert got["reacquire"]["regained"] >= 1 and got["reacquire"]["last"]["method"] == "rtkit"
        assert got["now"] == "rr"

    def test_with_never_it_stays_demoted_and_says_so(self, canary_bus, unprivileged):
        got = _run(canary_bus, unprivileged, "never")
        assert got["grant"] == "rtkit", got
        assert [e[0] for e in got["events"]].count("lost_realtime") == 1, got
        assert "REALTIME_LOST" in got["taints"] and got["losses"] == 1
        assert got["reacquire"]["attempts"] == 0 and got["now"] == "other"
