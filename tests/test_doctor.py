"""`streamcore doctor`: verdicts on data, then the real command as root and as the test user."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamcore import doctor
from streamcore.doctor import CHECK_IDS, run_checks, validate_report
from tests.test_realtime import zero_budget_cgroup  # noqa: F401 (a fixture used below)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamcore", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def by_id(report: dict) -> dict[str, dict]:
    return {c["id"]: c for c in report["checks"]}


def _doctor_in_cgroup(procs: str) -> dict:
    """Run in the unprivileged child: move into the cgroup, then every check."""
    Path(procs).write_text(str(os.getpid()))
    return _doctor_as_user(None)


def _doctor_as_user(address: str | None) -> dict:
    """Run in the unprivileged child: every check, in process (it cannot exec Python)."""
    if address is not None:
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
    report = run_checks(timeout=2.0)
    json.dumps(report)  # must be JSON as it is
    return report


# ---- verdicts on data ---------------------------------------------------------------------


GRANT = {"method": "direct", "policy": "fifo", "priority": 10, "nice": 0,
         "rttime_soft_us": None, "rttime_hard_us": None, "reset_on_fork": True, "reasons": [],
         "tid": 1, "requested_priority": 10, "notes": []}
CHILD_OTHER = {"tid": 0, "policy": "other", "priority": 0, "nice": 0, "reset_on_fork": False}


class TestVerdicts:
    """Each judge turns facts into pass / warn / fail / unknown with a fix."""

    def test_realtime_pass_needs_a_sched_other_child(self):
        """Realtime passes only when a forked child ran SCHED_OTHER."""
        assert doctor.judge_realtime(GRANT, CHILD_OTHER, None).status == "pass"
        leaked = {**CHILD_OTHER, "policy": "fifo", "priority": 10}
        check = doctor.judge_realtime(GRANT, leaked, None)
        assert check.status == "fail" and "RESET-ON-FORK" in check.detail

    def test_realtime_none_fails_with_the_rtkit_reason_as_fix(self):
        """No realtime fails, and the rtkit reason is the fix."""
        grant = {**GRANT, "method": "none", "policy": "other", "priority": 0,
                 "reasons": ["direct: refused", "rtkit: rtkit refused: polkit refused: ..."]}
        check = doctor.judge_realtime(grant, None, None)
        assert check.status == "fail" and check.fix.startswith("rtkit: ")

    def test_nice_only_is_a_warning(self):
        """Only a nice level is a warning."""
        grant = {**GRANT, "method": "nice", "policy": "other", "priority": 0, "nice": -11,
                 "reasons": ["direct: refused"]}
        assert doctor.judge_realtime(grant, None, None).status == "warn"

    def test_zero_rt_budget_fails(self):
        """A zero cgroup RT budget fails with the file to write; none at all passes."""
        check = doctor.judge_rt_budget(("/sys/fs/cgroup/cpu/docker/x/cpu.rt_runtime_us", 0))
        assert check.status == "fail" and "cpu.rt_runtime_us" in check.fix
        assert doctor.judge_rt_budget(None).status == "pass"

    def test_absent_cpufreq_is_unknown_with_why(self):
        """No cpufreq (a VM) is unknown with why; governors are judged."""
        check = doctor.judge_governor({"cpu0": None, "cpu1": None})
        assert check.status == "unknown" and "no cpufreq" in check.detail
        assert doctor.judge_governor({"cpu0": "powersave"}).status == "warn"
        assert doctor.judge_governor({"cpu0": "performance"}).status == "pass"

    @pytest.mark.parametrize(("version", "cmdline", "config", "debugfs", "status"), [
        ("#1 SMP PREEMPT_RT", None, None, None, "pass"),
        ("#1 SMP PREEMPT_DYNAMIC", "quiet", {"CONFIG_PREEMPT_NONE": "y"}, None, "warn"),
        ("#1 SMP PREEMPT_DYNAMIC", "preempt=full", {"CONFIG_PREEMPT_NONE": "y"}, None, "pass"),
        ("#1 SMP PREEMPT_DYNAMIC", "quiet", None, "none voluntary (full) lazy", "pass"),
        ("#1 SMP PREEMPT_DYNAMIC", "quiet", None, None, "unknown"),
        ("#1 SMP PREEMPT", "quiet", None, None, "pass"),
    ])
    def test_preemption(self, version, cmdline, config, debugfs, status):
        """PREEMPT_RT, debugfs, preempt= and the config default decide the mode."""
        assert doctor.judge_preempt(version, None, cmdline, config, debugfs).status == status

    def test_throttling(self):
        """RT throttling on passes, off warns, zero runtime fails, unreadable is unknown."""
        assert doctor.judge_throttling(950000, 1000000).status == "pass"
        assert doctor.judge_throttling(-1, 1000000).status == "warn"
        assert doctor.judge_throttling(0, 1000000).status == "fail"
        assert doctor.judge_throttling(None, None).status == "unknown"

    def test_missing_device_files_are_unknown(self):
        """Absent sysfs/proc/dev files give unknown, never a crash."""
        assert doctor.judge_dma_latency(False, False).status == "unknown"
        assert doctor.judge_dma_latency(True, False).status == "warn"
        assert doctor.judge_smt(None, None).status == "unknown"
        assert doctor.judge_smt("1", "on").status == "warn"
        assert doctor.judge_swappiness(None).status == "unknown"

    def test_memlock_below_the_engines_need(self):
        """A failed mlock of the engine's size fails with a limits.d fix."""
        check = doctor.judge_memlock({"soft": 65536, "hard": 65536}, False, 4 << 20,
                                     "Cannot allocate memory")
        assert check.status == "fail" and "memlock" in check.fix

    def test_rttime_soft_equal_hard_warns(self):
        """Soft == hard RLIMIT_RTTIME leaves no SIGXCPU before SIGKILL."""
        assert doctor.judge_rttime({"soft": 200000, "hard": 200000}, 200000).status == "warn"
        assert doctor.judge_rttime({"soft": None, "hard": None}, 200000).status == "pass"


class TestSchema:
    """validate_report catches a report that departs from the documented fields."""

    def _report(self) -> dict:
        check = {"id": "x", "title": "t", "status": "pass", "detail": "d", "fix": None,
                 "data": {}}
        checks = [{**check, "id": i} for i in CHECK_IDS]
        return {"version": "0", "user": {"uid": 1, "name": "u", "groups": []},
                "summary": {"pass": len(checks), "warn": 0, "fail": 0, "unknown": 0},
                "checks": checks}

    def test_a_conforming_report(self):
        """A report of the documented shape validates."""
        assert validate_report(self._report()) == []

    @pytest.mark.parametrize("spoil", [
        lambda r: r.pop("summary"),
        lambda r: r["checks"][0].update(status="maybe"),
        lambda r: r["checks"][1].update(status="warn"),  # warn without a fix; summary off
        lambda r: r["checks"].pop(),
        lambda r: r["checks"][2].update(data={"x": object()}),
        lambda r: r["user"].update(uid="0"),
    ])
    def test_departures_are_found(self, spoil):
        """Each kind of departure from the documented fields is reported."""
        report = self._report()
        spoil(report)
        assert validate_report(report) != []


# ---- the real command ---------------------------------------------------------------------


class TestAsRoot:
    """`python -m streamcore doctor` as root on this machine."""

    def test_json_validates_and_realtime_is_direct(self):
        """--json validates; root gets direct realtime, a SCHED_OTHER child."""
        done = run_cli("doctor", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert validate_report(report) == []
        checks = by_id(report)
        assert report["user"]["uid"] == os.getuid() == 0
        realtime = checks["realtime"]
        assert realtime["status"] == "pass", realtime
        assert realtime["data"]["grant"]["method"] == "direct"
        assert realtime["data"]["forked_child"]["policy"] == "other"
        assert checks["rlimit-rtprio"]["status"] == "pass"  # CAP_SYS_NICE
        # Facts of this machine (ENV.md): throttling 950000/1000000, hrtimers on.
        runtime = Path("/proc/sys/kernel/sched_rt_runtime_us").read_text()
        assert checks["rt-throttling"]["data"]["sched_rt_runtime_us"] == int(runtime)
        assert checks["high-res-timers"]["status"] == "pass"

    def test_text_has_one_line_per_check_and_a_summary(self):
        """A line per check, then the summary."""
        done = run_cli("doctor")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        for check_id in CHECK_IDS:
            assert any(line.split()[1:2] == [check_id] for line in lines), check_id
        assert lines[-1].startswith("summary: ")

    def test_dead_bus_is_reported_within_the_timeout(self, tmp_path):
        """No bus: rtkit warns (direct works), polkit unknown, no hang."""
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/none.sock"}
        start = time.monotonic()
        done = run_cli("--bus-timeout", "0.5", "doctor", "--json", env=env)
        elapsed = time.monotonic() - start
        assert done.returncode == 0, done.stderr
        checks = by_id(json.loads(done.stdout))
        assert checks["rtkit"]["status"] == "warn"  # not needed: root gets direct realtime
        assert "no system bus" in checks["rtkit"]["detail"]
        assert checks["polkit"]["status"] == "unknown"
        assert elapsed < 30  # a start-up bound, not a speed figure: it must not hang


class TestAsUnprivileged:
    """The same checks as the unprivileged test user (in process: it cannot exec Python)."""

    def test_in_the_group_with_rtkit(self, rtkit_bus, unprivileged):
        """Realtime from rtkit; rtkit and polkit pass; RLIMIT_RTPRIO warns."""
        report = unprivileged.run(_doctor_as_user, None).unwrap()
        assert validate_report(report) == []
        assert report["user"]["uid"] == unprivileged.member.pw_uid
        checks = by_id(report)
        realtime = checks["realtime"]
        assert realtime["status"] == "pass", realtime
        assert realtime["data"]["grant"]["method"] == "rtkit"
        assert realtime["data"]["grant"]["policy"] == "rr"
        assert checks["rtkit"]["status"] == "pass"
        assert checks["rtkit"]["data"]["limits"]["rttime_usec_max"] == 200_000
        assert checks["polkit"]["status"] == "pass"
        assert checks["rlimit-rtprio"]["status"] == "warn"  # 0 and no CAP_SYS_NICE
        assert checks["capabilities"]["data"] == {"CAP_SYS_NICE": False, "CAP_IPC_LOCK": False}
        # The limits are the user's own (inherited from this process), read before the
        # realtime try lowered RLIMIT_RTTIME for rtkit.
        inherited = resource.getrlimit(resource.RLIMIT_RTTIME)[1]
        if inherited == resource.RLIM_INFINITY:
            inherited = None
        assert checks["rlimit-rttime"]["data"]["hard"] == inherited
        assert realtime["data"]["grant"]["rttime_hard_us"] == min(inherited or 200_000, 200_000)

    def test_outside_the_group(self, rtkit_bus, unprivileged):
        """The outsider: realtime fails with polkit's refusal as the fix."""
        report = unprivileged.run(_doctor_as_user, None, in_rt_group=False).unwrap()
        assert validate_report(report) == []
        checks = by_id(report)
        assert checks["realtime"]["status"] == "fail"
        assert "polkit refused" in checks["realtime"]["fix"]
        assert checks["polkit"]["status"] == "fail"

    def test_without_a_bus(self, unprivileged, tmp_path):
        """No bus for the test user: realtime and rtkit fail, polkit unknown."""
        report = unprivileged.run(_doctor_as_user, "unix:path=/nonexistent/bus.sock").unwrap()
        assert validate_report(report) == []
        checks = by_id(report)
        assert checks["realtime"]["status"] == "fail"
        assert checks["rtkit"]["status"] == "fail" and "no system bus" in checks["rtkit"]["detail"]
        assert checks["polkit"]["status"] == "unknown"

    def test_in_a_cgroup_without_rt_budget(self, rtkit_bus, unprivileged,
                                           zero_budget_cgroup):  # noqa: F811 (the fixture)
        """The container failure: doctor names the zero budget and its file."""
        procs = str(zero_budget_cgroup / "cgroup.procs")
        report = unprivileged.run(_doctor_in_cgroup, procs).unwrap()
        assert validate_report(report) == []
        checks = by_id(report)
        budget = checks["rt-group-budget"]
        assert budget["status"] == "fail"
        assert budget["data"]["path"] == str(zero_budget_cgroup / "cpu.rt_runtime_us")
        realtime = checks["realtime"]
        assert realtime["status"] == "warn"  # rtkit's nice level still works
        assert realtime["data"]["grant"]["method"] == "rtkit-nice"
        assert "no realtime budget" in realtime["fix"]
