"""Realtime through the XDG desktop portal, with a real xdg-desktop-portal and rtkit.

A private session bus and the portal run as the test user (tests/services/portal.py), with
the rtkit fixture's system bus behind the portal.  The client runs as the test user inside a
fake Flatpak sandbox: a PID namespace with its own /proc, a root holding /.flatpak-info, and
the bwrapinfo.json that lets the portal map its ids to the host's.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from pathlib import Path

import pytest

import streamcore
from streamcore import doctor, rtkit
from streamcore import portal as _portal
from streamcore.realtime import ProbeThread, acquire_realtime
from tests.services.common import hung_socket
from tests.services.portal import FlatpakSandbox, portal_bus

APP = "org.streamcore.Test"
_instances = itertools.count(7001)


@pytest.fixture(scope="module")
def portal(rtkit_bus, unprivileged):
    with portal_bus(unprivileged.member, rtkit_bus.address) as pair:
        yield pair


def _sandbox(portal, unprivileged, app: str = APP, dumpable: bool = True) -> FlatpakSandbox:
    member = unprivileged.member
    return FlatpakSandbox(app, str(next(_instances)), portal.runtime_dir, member.pw_uid,
                          member.pw_gid, dumpable)


def _summary(grant) -> dict:
    return {"method": grant.method, "policy": grant.policy, "reasons": list(grant.reasons),
            "notes": list(grant.notes), "reset_on_fork": grant.reset_on_fork}


def _engine_in(session_address: str) -> dict:
    """As the test user: an engine whose mixer gets realtime by the chain; what the kernel
    says of the mixer thread."""
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = session_address
    with streamcore.Engine(sink="null") as engine:
        grant = engine.grant
        kernel_policy = os.sched_getscheduler(engine.mixer_tid)
        priority = os.sched_getparam(engine.mixer_tid).sched_priority
    return {"grant": _summary(grant), "kernel_policy": kernel_policy, "priority": priority,
            "pid": os.getpid(), "app": _portal.flatpak_app()}


def _second_thread_in(session_address: str) -> dict:
    """As the test user: the chain for a thread that is not the main one (rtkit's own-pid
    form cannot name it from inside a PID namespace with its own /proc)."""
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = session_address
    with ProbeThread() as probe:
        grant = acquire_realtime(probe.tid, priority=5)
    return _summary(grant)


class TestInAFlatpakSandbox:
    def test_the_mixer_gets_realtime_through_the_portal(self, portal, unprivileged):
        got = unprivileged.run(_engine_in, portal.address,
                               flatpak=_sandbox(portal, unprivileged)).unwrap()
        grant = got["grant"]
        print(f"\nin a fake Flatpak: {grant['method']}, kernel policy {got['kernel_policy']} "
              f"priority {got['priority']}, notes {grant['notes']}")
        assert got["pid"] == 1 and got["app"] == APP  # inside the sandbox
        assert grant["method"] == "portal", f"{grant}\n{portal.logs()}"
        assert got["kernel_policy"] == os.SCHED_RR | os.SCHED_RESET_ON_FORK
        assert got["priority"] > 0 and grant["reset_on_fork"]
        assert any("Flatpak sandbox: the portal mapped" in n for n in grant["notes"]), grant
        assert [r.split(":")[0] for r in grant["reasons"]] == ["direct"], grant

    def test_permission_store_no_is_the_reason(self, portal, unprivileged):
        refused = "org.streamcore.Refused"
        portal.set_permission(refused, "no")
        got = unprivileged.run(_second_thread_in, portal.address,
                               flatpak=_sandbox(portal, unprivileged, refused)).unwrap()
        assert got["method"] not in ("portal", "rtkit") and got["policy"] == "other", got
        (line,) = [r for r in got["reasons"] if r.startswith("portal: ")]
        assert line.startswith(f"portal: the portal refused: its permission store says no "
                               f"for app '{refused}'"), got
        (nice,) = [r for r in got["reasons"] if r.startswith("portal-nice: ")]
        assert "permission store says no" in nice, got
        # rtkit is asked after the portal, and cannot see the thread from the namespace
        (rtkit_line,) = [r for r in got["reasons"] if r.startswith("rtkit: ")]
        assert "rtkit cannot see this thread: PID namespace" in rtkit_line, got

    def test_a_process_that_is_not_dumpable_is_told_so(self, portal, unprivileged):
        got = unprivileged.run(_second_thread_in, portal.address,
                               flatpak=_sandbox(portal, unprivileged, dumpable=False)).unwrap()
        (line,) = [r for r in got["reasons"] if r.startswith("portal: ")]
        assert "PR_SET_DUMPABLE" in line and "/proc/" in line, got


def _doctor_in(session_address: str | None) -> dict:
    """As the test user: streamcore doctor's checks, in process."""
    if session_address is None:
        os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        os.environ["XDG_RUNTIME_DIR"] = "/nonexistent"
    else:
        os.environ["DBUS_SESSION_BUS_ADDRESS"] = session_address
    report = doctor.run_checks(timeout=2.0)
    return {c["id"]: c for c in report["checks"]}


class TestDoctor:
    def test_in_the_sandbox_the_portal_passes_with_its_limits(self, portal, rtkit_bus,
                                                              unprivileged):
        checks = unprivileged.run(_doctor_in, portal.address,
                                  flatpak=_sandbox(portal, unprivileged)).unwrap()
        sandbox, found = checks["sandbox"], checks["portal"]
        assert sandbox["status"] == "pass" and f"Flatpak sandbox (app {APP})" \
            in sandbox["detail"], sandbox
        limits = rtkit.read_limits()  # the suite's rtkit, which the portal forwards to
        assert found["status"] == "pass", found
        assert found["data"]["limits"] == {
            "max_realtime_priority": limits.max_realtime_priority,
            "min_nice_level": limits.min_nice_level,
            "rttime_usec_max": limits.rttime_usec_max}
        assert "(needed: this process is sandboxed)" in found["detail"]
        realtime = checks["realtime"]
        assert realtime["status"] == "pass" and realtime["data"]["grant"]["method"] == "portal"

    def test_a_portal_without_rtkit_fails_with_the_fix(self, rtkit_bus, unprivileged):
        with portal_bus(unprivileged.member, None) as lonely:
            checks = unprivileged.run(_doctor_in, lonely.address,
                                      flatpak=_sandbox(lonely, unprivileged)).unwrap()
        found = checks["portal"]
        assert found["status"] == "fail" and "found no RealtimeKit" in found["detail"], found
        assert "restart xdg-desktop-portal" in found["fix"]

    def test_without_a_session_bus(self, portal, rtkit_bus, unprivileged):
        """Sandboxed: a failure with what to do; not sandboxed: not needed."""
        inside = unprivileged.run(_doctor_in, None,
                                  flatpak=_sandbox(portal, unprivileged)).unwrap()["portal"]
        assert inside["status"] == "fail" and inside["detail"].startswith(
            "no session bus to ask the portal: DBUS_SESSION_BUS_ADDRESS is not set"), inside
        assert "desktop session" in inside["fix"]
        outside = unprivileged.run(_doctor_in, None).unwrap()["portal"]
        assert outside["status"] == "pass" and "not needed outside a sandbox" \
            in outside["detail"], outside


class TestOutsideASandbox:
    def test_the_chain_stays_direct_then_rtkit(self, portal, unprivileged):
        got = unprivileged.run(_engine_in, portal.address).unwrap()
        grant = got["grant"]
        assert got["app"] is None and got["pid"] != 1
        assert grant["method"] == "rtkit", grant
        assert [r.split(":")[0] for r in grant["reasons"]] == ["direct"], grant


def test_a_portal_without_rtkit_says_so(unprivileged, rtkit_bus):
    """The portal started with no system bus (no rtkit behind it) answers "RealtimeKit was
    not found", and the grant carries that reason."""
    with portal_bus(unprivileged.member, None) as lonely:
        got = unprivileged.run(_second_thread_in, lonely.address,
                               flatpak=_sandbox(lonely, unprivileged)).unwrap()
    (line,) = [r for r in got["reasons"] if r.startswith("portal: ")]
    assert "the portal has no RealtimeKit behind it (RealtimeKit was not found" in line, got


def _second_thread_without_a_session_bus() -> dict:
    os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
    os.environ["XDG_RUNTIME_DIR"] = "/nonexistent"
    with ProbeThread() as probe:
        return _summary(acquire_realtime(probe.tid, priority=5))


def test_no_session_bus_is_a_reason(unprivileged, rtkit_bus):
    """In a PID namespace (sandboxed) with no session bus at all: the portal step says so
    first, then rtkit is asked."""
    got = unprivileged.run(_second_thread_without_a_session_bus,
                           pid_namespace="own-proc").unwrap()
    assert [r.split(":")[0] for r in got["reasons"]][:3] == ["direct", "portal", "rtkit"], got
    assert got["reasons"][1] == (
        "portal: no session bus to ask the portal: DBUS_SESSION_BUS_ADDRESS is not set and "
        "there is no $XDG_RUNTIME_DIR/bus"), got


@pytest.fixture
def hung_session_bus():
    """A socket that accepts connections and never says a word, where the test user can
    reach it."""
    folder = Path(tempfile.mkdtemp(prefix="streamcore-hung-"))
    folder.chmod(0o755)
    with hung_socket(folder / "bus") as address:
        yield address
    folder.rmdir()


def _timed_second_thread(session_address: str, timeout: float) -> dict:
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = session_address
    with ProbeThread() as probe:
        began = time.monotonic()
        grant = acquire_realtime(probe.tid, priority=5, timeout=timeout)
        return {**_summary(grant), "elapsed": time.monotonic() - began}


def test_a_hung_session_bus_costs_one_deadline(unprivileged, rtkit_bus, hung_session_bus):
    """Sandboxed, so the portal is asked first, on a session bus that never answers: the
    whole request still ends within its one deadline (shared with the system bus), and both
    bus steps say why."""
    got = unprivileged.run(_timed_second_thread, hung_session_bus, 1.0,
                           pid_namespace="own-proc").unwrap()
    assert got["elapsed"] < 1.0 + 1.5, got  # 1.5 s of slack on a loaded machine; a hang is not
    (portal_line,) = [r for r in got["reasons"] if r.startswith("portal: ")]
    assert portal_line.startswith("portal: the session bus or the portal did not answer in "
                                  "time"), got
    assert got["method"] not in ("portal", "rtkit"), got
