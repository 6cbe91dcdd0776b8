"""`streamcore doctor`: verdicts on data, then the real command as root and as the test user."""

from __future__ import annotations

import json
import os
import resource
import socket
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


PORTAL_LIMITS = {"max_realtime_priority": 20, "min_nice_level": -15, "rttime_usec_max": 200000}


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

    def test_pam_rttime_lines_for_this_user(self, tmp_path):
        (tmp_path / "limits.conf").write_text(
            "# comment\n@audio - rtprio 95\n@audio hard rttime 200000\n"
            "alice soft rttime 150000  # hers\nbob hard rttime 1\n* - rttime unlimited\n")
        (tmp_path / "limits.d").mkdir()
        (tmp_path / "limits.d" / "audio.conf").write_text("@video hard rttime 5\n")
        found = doctor.pam_rttime("alice", ["alice", "audio"],
                                  (str(tmp_path / "limits.conf"),
                                   str(tmp_path / "limits.d" / "*.conf")))
        assert [(p["domain"], p["type"], p["value"]) for p in found] == [
            ("@audio", "hard", "200000"), ("alice", "soft", "150000"), ("*", "-", "unlimited")]
        check = doctor.judge_rttime({"soft": 150000, "hard": 200000}, 200000, found)
        assert check.status == "pass" and "hard 200000 for @audio" in check.detail
        assert check.data["pam"] == found

    @pytest.mark.parametrize(("argv", "expected"), [
        (["rtkit-daemon"], {"enabled": True, "cheep_ms": 5000, "watchdog_ms": 10000,
                            "refuse_s": 300}),
        (["rtkit-daemon", "--canary-cheep-msec=100", "--canary-watchdog-msec", "300",
          "--canary-refuse-sec=0"], {"enabled": True, "cheep_ms": 100, "watchdog_ms": 300,
                                     "refuse_s": 0}),
        (["rtkit-daemon", "--no-canary"], {"enabled": False, "cheep_ms": 5000,
                                           "watchdog_ms": 10000, "refuse_s": 300})])
    def test_rtkit_canary_from_its_command_line(self, argv, expected):
        assert doctor.rtkit_canary(argv) == expected

    @staticmethod
    def _sandbox(**changes: object) -> dict:
        facts = {"flatpak": None, "container": None, "pid": 4242, "bus_pid": 4242,
                 "bus_error": None, "nspid": [4242]}
        return {**facts, **changes}

    def test_sandbox_verdicts(self):
        plain = doctor.judge_sandbox(self._sandbox())
        assert plain.status == "pass" and plain.detail == "not sandboxed"
        flatpak = doctor.judge_sandbox(self._sandbox(flatpak="org.example.Player"))
        assert flatpak.status == "pass" and "org.example.Player" in flatpak.detail
        assert "XDG portal first" in flatpak.detail
        hosts = doctor.judge_sandbox(self._sandbox(pid=1, bus_pid=9000, nspid=[9000, 1]))
        assert hosts.status == "pass" and "host's ids" in hosts.detail
        own = doctor.judge_sandbox(self._sandbox(pid=1, bus_pid=9000, nspid=[1]))
        assert own.status == "warn" and "only the main thread" in own.detail
        assert "--mount-proc" in own.fix
        unknown = doctor.judge_sandbox(self._sandbox(bus_pid=None, bus_error="no bus"))
        assert unknown.status == "pass" and "could not be asked" in unknown.detail


    @staticmethod
    def _portal(**changes: object) -> dict:
        facts = {"address": "unix:path=/run/user/1000/bus", "error": None, "portal": True,
                 "limits": PORTAL_LIMITS}
        return {**facts, **changes}

    def test_portal_verdicts(self):
        ok = doctor.judge_portal(self._portal(), in_sandbox=True)
        assert ok.status == "pass" and ok.fix is None
        assert ok.detail == ("the portal allows SCHED_RR up to priority 20, nice down to -15, "
                             "RLIMIT_RTTIME up to 200000 µs (needed: this process is sandboxed)")
        no_rtkit = self._portal(limits={"max_realtime_priority": 0, "min_nice_level": 0,
                                        "rttime_usec_max": 0})
        lonely = doctor.judge_portal(no_rtkit, in_sandbox=True)
        assert lonely.status == "fail" and "found no RealtimeKit" in lonely.detail
        assert "restart xdg-desktop-portal" in lonely.fix
        assert doctor.judge_portal(no_rtkit, in_sandbox=False).status == "warn"
        absent = self._portal(portal=False, limits=None)
        missing = doctor.judge_portal(absent, in_sandbox=True)
        assert missing.status == "fail" and "no xdg-desktop-portal on the session bus" \
            in missing.detail and "desktop session" in missing.fix
        unneeded = doctor.judge_portal(absent, in_sandbox=False)
        assert unneeded.status == "pass" and "not needed outside a sandbox" in unneeded.detail
        nobus = doctor.judge_portal(self._portal(address=None, portal=False, limits=None,
                                                 error="no session bus to ask the portal"),
                                    in_sandbox=True)
        assert nobus.status == "fail" and nobus.detail.startswith("no session bus")

    def test_sandboxed_facts(self):
        assert not doctor.sandboxed(self._sandbox())
        assert doctor.sandboxed(self._sandbox(flatpak="org.example.Player"))
        assert doctor.sandboxed(self._sandbox(pid=1, bus_pid=9000, nspid=[1]))
        assert doctor.sandboxed(self._sandbox(pid=1, bus_pid=None, nspid=[9000, 1]))


def server_facts(**changes: object) -> dict:
    """audio_server_facts as a JACK2 server with one realtime thread gives them, changed."""
    facts = {
        "server": "jack2", "via": "libjack", "pid": 4242, "process": "jackd", "period": 256,
        "samplerate": 48000, "version": "1.9.21", "problem": None, "also": None,
        "threads": 4, "realtime_threads": [[4245, "fifo", 10]], "threads_error": None,
        "libjack": {"path": "/usr/lib/x86_64-linux-gnu/libjack.so.0.1.0", "version": "1.9.21",
                    "flavour": "jack2", "error": None},
        "jack_socket": {"name": "default", "socket": "/dev/shm/jack_default_0_0",
                        "listening": True, "pid": 4242, "uid": 0, "error": None},
        "pipewire_socket": {"socket": None, "listening": False, "pid": None, "uid": None,
                            "error": "neither PIPEWIRE_RUNTIME_DIR nor XDG_RUNTIME_DIR is set"},
    }
    facts.update(changes)
    return facts


PIPEWIRE_FACTS = {
    "server": "pipewire", "pid": 77, "process": "pipewire",
    "realtime_threads": [[78, "fifo", 88]], "threads": 2, "version": None,
    "libjack": {"path": "/usr/lib/x86_64-linux-gnu/pipewire-0.3/jack/libjack.so.0.365.0",
                "version": "3.0.0.0 (using PipeWire 0.3.65)", "flavour": "pipewire",
                "error": None},
}


class TestAudioServerVerdicts:
    """The audio server: realtime threads pass; no realtime, no server or a hung one warn."""

    def test_jack2_with_realtime_threads_passes(self):
        """A JACK2 server with a SCHED_FIFO thread passes; the detail has its period."""
        check = doctor.judge_audio_server(server_facts())
        assert check.status == "pass" and check.fix is None
        assert check.detail.startswith("JACK2, pid 4242 (jackd), period 256 frames at 48000 Hz")
        assert "SCHED_FIFO 10 on 1 of 4 threads" in check.detail
        assert check.data["xruns_visible"] is True
        json.dumps(check.data)

    @pytest.mark.parametrize(("facts", "fix_words"), [
        (server_facts(realtime_threads=[]), ("-R", "rtprio")),
        (server_facts(**{**PIPEWIRE_FACTS, "realtime_threads": []}), ("module-rt", "rtkit")),
    ])
    def test_a_server_without_realtime_warns_with_how_to_get_it(self, facts, fix_words):
        """No realtime thread in the server warns, with that server's way to realtime."""
        check = doctor.judge_audio_server(facts)
        assert check.status == "warn" and "none of its" in check.detail
        assert all(word in check.fix for word in fix_words), check.fix

    def test_pipewire_says_its_xruns_are_hidden(self):
        """PipeWire passes with realtime, and says how its xruns are counted (not by
        telling clients)."""
        check = doctor.judge_audio_server(server_facts(**PIPEWIRE_FACTS))
        assert check.status == "pass" and check.detail.startswith("PipeWire, pid 77")
        assert "pw-top" in check.detail and "pw-profiler" in check.data["note"]
        assert check.data["xruns_visible"] is False

    def test_a_libjack_that_does_not_reach_the_server_is_named(self):
        """PipeWire found by its socket while JACK clients load JACK2's libjack: said so."""
        check = doctor.judge_audio_server(server_facts(**{**PIPEWIRE_FACTS, "via": "socket",
                                                          "period": None,
                                                          "libjack": server_facts()["libjack"]}))
        assert check.status == "pass"
        assert "load JACK2's libjack, which does not reach PipeWire" in check.detail

    def test_no_server_warns_with_the_sinks_that_need_none(self):
        """No server is a warning (null, file and pipe sinks need none), with both reasons."""
        facts = server_facts(server=None, via=None, pid=None, process=None, period=None,
                             samplerate=None, threads=None, realtime_threads=None,
                             jack_socket={"name": "x", "socket": None, "listening": False,
                                          "pid": None, "uid": None,
                                          "error": "no socket jack_x_0_0 in /dev/shm or /tmp"})
        check = doctor.judge_audio_server(facts)
        assert check.status == "warn" and check.detail.startswith("no audio server")
        assert "no socket jack_x_0_0" in check.detail and "PIPEWIRE_RUNTIME_DIR" in check.detail
        assert "jackd" in check.fix and "sink='null'" in check.fix and "--pipe" in check.fix

    def test_a_server_that_answers_no_client_warns(self):
        """A server that accepts a connection but opens no client warns: restart it."""
        check = doctor.judge_audio_server(server_facts(
            via="socket", period=None, samplerate=None,
            problem="it accepted a connection, but no JACK client opened within 1 s (hung?)"))
        assert check.status == "warn" and "hung?" in check.detail
        assert check.fix.startswith("restart JACK2 (pid 4242)")

    def test_unreadable_threads_are_unknown_with_why(self):
        """A server whose threads cannot be read is unknown, with why."""
        check = doctor.judge_audio_server(server_facts(
            pid=0, process=None, threads=None, realtime_threads=None,
            threads_error="the server runs in another PID namespace"))
        assert check.status == "unknown" and "another PID namespace" in check.detail

    def test_thread_scheduling_from_stat(self):
        """Policy and priority are read after the command name, whatever it holds."""
        fields = {n: "0" for n in range(3, 53)}  # proc(5): field 3 (state) to 52
        fields.update({3: "S", 39: "1", 40: "88", 41: "1"})  # cpu 1, rt_priority 88, FIFO
        line = "1234 (a) (b c)) " + " ".join(fields[n] for n in range(3, 53))
        assert doctor.thread_scheduling(line) == ("fifo", 88)


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

    def test_in_a_pid_namespace_with_its_own_proc(self, rtkit_bus, unprivileged):
        """A real PID namespace with its own /proc: the sandbox check warns with the fix;
        the rtkit line names the suite's rtkit-daemon and its canary (rtkit's defaults)."""
        report = unprivileged.run(_doctor_as_user, None, pid_namespace="own-proc").unwrap()
        assert validate_report(report) == []
        checks = by_id(report)
        sandbox = checks["sandbox"]
        assert sandbox["status"] == "warn", sandbox
        assert sandbox["data"]["pid"] == 1 and sandbox["data"]["bus_pid"] not in (None, 1)
        assert "only the main thread" in sandbox["detail"]
        outside = by_id(unprivileged.run(_doctor_as_user, None).unwrap())
        plain = outside["sandbox"]
        assert plain["status"] == "pass" and plain["data"]["bus_pid"] == plain["data"]["pid"]
        canary = outside["rtkit"]["data"]["canary"]
        assert canary == {"pid": rtkit_bus.services[-1].pid,
                          **doctor.rtkit_canary(["rtkit-daemon"])}  # started without options
        assert "refuses for 300 s" in outside["rtkit"]["detail"]

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


# ---- the audio server, real ---------------------------------------------------------------


def _doctor_audio_server(env: dict[str, str]) -> dict:
    """`streamcore doctor --json` in a child with ``env``: its audio-server check (libjack is
    loaded once per process: which one is the child's environment's business)."""
    done = run_cli("--bus-timeout", "0.5", "doctor", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert validate_report(report) == []
    return by_id(report)["audio-server"]


class TestAudioServer:
    """The audio-server check against real servers and sockets, bounded in time."""

    def test_jack2(self, jack_server):
        """JACK2 answers: its pid (SO_PEERCRED), period, rate, and (as root) realtime."""
        check = doctor.judge_audio_server(doctor.audio_server_facts(2.0))
        data = check.data
        assert data["server"] == "jack2" and data["via"] == "libjack", check
        assert data["libjack"]["flavour"] == "jack2"
        assert data["pid"] == jack_server.service.pid
        assert data["jack_socket"]["socket"].endswith(f"jack_{jack_server.name}_{os.geteuid()}_0")
        assert data["process"] == "jackd"
        assert (data["period"], data["samplerate"]) == (jack_server.period,
                                                        jack_server.samplerate)
        if os.geteuid() == 0:  # the fixture runs jackd realtime as root
            assert check.status == "pass", check
            assert data["realtime_threads"], data
            assert {policy for _tid, policy, _prio in data["realtime_threads"]} <= {"fifo", "rr"}
            tids = {int(t) for t in os.listdir(f"/proc/{jack_server.service.pid}/task")}
            assert {tid for tid, _policy, _prio in data["realtime_threads"]} <= tids
        else:
            assert check.status == "warn" and data["realtime_threads"] == []

    def test_no_server(self, tmp_path, monkeypatch):
        """No JACK server of that name and an empty runtime dir: warn 'none'."""
        monkeypatch.setenv("JACK_DEFAULT_SERVER", f"streamcore-absent-{os.getpid()}")
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        for name in ("PIPEWIRE_RUNTIME_DIR", "PIPEWIRE_REMOTE", "JACK_PROMISCUOUS_SERVER"):
            monkeypatch.delenv(name, raising=False)
        check = doctor.judge_audio_server(doctor.audio_server_facts(1.0))
        assert check.status == "warn" and check.data["server"] is None, check
        assert f"no socket {tmp_path}/pipewire-0" in check.detail

    def test_a_stale_socket_is_no_server(self, tmp_path, monkeypatch):
        """A socket file nobody listens on (its server died) is no server, and said so."""
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(tmp_path / "pipewire-0"))
        stale.close()  # the file stays
        monkeypatch.setenv("JACK_DEFAULT_SERVER", f"streamcore-absent-{os.getpid()}")
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        monkeypatch.delenv("PIPEWIRE_RUNTIME_DIR", raising=False)
        monkeypatch.delenv("PIPEWIRE_REMOTE", raising=False)
        check = doctor.judge_audio_server(doctor.audio_server_facts(1.0))
        assert check.status == "warn" and check.data["server"] is None
        assert "nothing listens" in check.detail

    def test_a_socket_that_accepts_nothing_does_not_hang(self, tmp_path, monkeypatch):
        """A PipeWire socket whose queue is full (a hung server) warns at once."""
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(tmp_path / "pipewire-0"))
        listener.listen(0)
        waiting = socket.socket(socket.AF_UNIX)
        waiting.setblocking(False)
        waiting.connect(str(tmp_path / "pipewire-0"))  # fills the queue; never accepted
        monkeypatch.setenv("JACK_DEFAULT_SERVER", f"streamcore-absent-{os.getpid()}")
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
        monkeypatch.delenv("PIPEWIRE_RUNTIME_DIR", raising=False)
        monkeypatch.delenv("PIPEWIRE_REMOTE", raising=False)
        try:
            start = time.monotonic()
            check = doctor.judge_audio_server(doctor.audio_server_facts(1.0))
            elapsed = time.monotonic() - start
        finally:
            waiting.close()
            listener.close()
        assert check.data["server"] == "pipewire" and check.data["pid"] is None
        assert check.status == "warn" and "accepts none" in check.detail
        assert elapsed < 1.0  # refused at once, not after the timeout

    def test_a_stopped_jack_server_costs_the_timeout_not_a_hang(self):
        """A jackd that is stopped (SIGSTOP) is found by its pid and warned about after the
        timeout, where a libjack client alone would wait for it."""
        # In a child: libjack crashes a process whose PortAudio holds a client on the
        # session's server when it also talks to a second one (as tests/test_device_sink.py).
        done = subprocess.run([sys.executable, "-c", _STOPPED_JACK.format(
            root=str(Path(__file__).resolve().parent.parent),
            name=f"streamcore-stopped-{os.getpid()}")],
            capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.splitlines()[-1])
        check, pid = result["check"], result["pid"]
        assert check["data"]["server"] == "jack2" and check["data"]["via"] == "socket"
        assert check["data"]["pid"] == pid
        assert check["status"] == "warn" and "no JACK client opened within 0.5 s" in check["detail"]
        assert check["fix"].startswith(f"restart JACK2 (pid {pid})")
        assert 0.5 <= result["elapsed"] < 3.0  # the client's wait, plus little
        assert result["jackd_status"] == 0  # it exited by itself: its registry slot is free


# Once continued, jackd serves the client doctor left waiting; a SIGTERM before that client is
# done makes jackd wait 5 s for it, over Service.stop's grace, and a SIGKILLed jackd leaves its
# slot in JACK's machine-wide registry (8 servers): so the client is let finish first.
_STOPPED_JACK = """
import json, os, pathlib, signal, sys, tempfile, threading, time
from dataclasses import asdict
sys.path.insert(0, {root!r})
from streamcore import doctor
from tests.services.common import wait_until
from tests.services.jack import start_jack

server = start_jack(pathlib.Path(tempfile.mkdtemp()), name={name!r}, rescan_portaudio=False)
try:
    os.kill(server.service.pid, signal.SIGSTOP)
    start = time.monotonic()
    facts = doctor.audio_server_facts(0.5)
    elapsed = time.monotonic() - start
finally:
    os.kill(server.service.pid, signal.SIGCONT)
    wait_until(lambda: all(t.name != "streamcore-doctor-jack" for t in threading.enumerate()),
               10)
    server.service.stop(timeout=15)
check = asdict(doctor.judge_audio_server(facts))
print(json.dumps({{"check": check, "elapsed": elapsed, "pid": server.service.pid,
                  "jackd_status": server.service.process.returncode}}))
"""


class TestAudioServerPipeWire:
    """`streamcore doctor` in a child with a real PipeWire server's environment."""

    def test_found_by_its_socket(self, pipewire_server):
        """PipeWire's socket gives the daemon's pid; the check says xruns are hidden."""
        env = {**pipewire_server.client_env(),
               "JACK_DEFAULT_SERVER": f"streamcore-absent-{os.getpid()}"}
        check = _doctor_audio_server(env)
        data = check["data"]
        assert data["server"] == "pipewire" and data["via"] == "socket", check
        assert data["pid"] == pipewire_server.pid and data["process"] == "pipewire"
        assert data["pipewire_socket"]["socket"] == str(pipewire_server.runtime_dir
                                                        / "pipewire-0")
        assert data["xruns_visible"] is False and "pw-profiler" in data["note"]
        assert "pw-top" in check["detail"]
        # JACK clients of that environment load JACK2's libjack: they do not reach PipeWire.
        assert "JACK2's libjack, which does not reach PipeWire" in check["detail"]
        if os.geteuid() == 0:  # module-rt makes the data thread SCHED_FIFO 88 as root
            assert check["status"] == "pass", check
            assert sorted({prio for _tid, _policy, prio in data["realtime_threads"]}) == [88]

    def test_through_pipewire_jack_it_is_still_pipewire(self, pipewire_server):
        """Through pipewire-jack's libjack a JACK client reaches PipeWire: said so, with
        the quantum as the period."""
        check = _doctor_audio_server(pipewire_server.jack_env())
        data = check["data"]
        assert data["server"] == "pipewire" and data["via"] == "libjack", check
        assert data["libjack"]["flavour"] == "pipewire"
        assert "pipewire-0.3/jack/" in data["libjack"]["path"]
        assert "PipeWire" in data["version"]
        assert data["pid"] == pipewire_server.pid
        assert (data["period"], data["samplerate"]) == (pipewire_server.quantum,
                                                        pipewire_server.samplerate)
        assert data["xruns_visible"] is False
        if os.geteuid() == 0:
            assert check["status"] == "pass", check
