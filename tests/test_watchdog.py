"""The watchdog on a running engine: a runaway mixer, a starved canary, SIGXCPU.

The runaway is the test hook Engine._test_spin: the mixer busy-loops inside its cycle.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import pickle
import resource
import struct
import time

import pytest

from streamcore import Engine, Watchdog, current_scheduling
from streamcore.telemetry import TRACE_DEMOTED

CPU = 0


def wait_for_event(engine: Engine, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = engine.events()
        if events:
            return events
        time.sleep(0.005)
    return engine.events()


@contextlib.contextmanager
def counter_on(cpu: int, policy: int = os.SCHED_OTHER, priority: int = 0,
               seconds: float = 10.0):
    """A child process pinned to ``cpu`` that bumps a shared counter in a busy loop, for
    the block; yields a function that reads the counter (a copy: no pointer into the
    shared page outlives the block, whatever the block raised)."""
    shared = mmap.mmap(-1, 8)
    pid = os.fork()
    if pid == 0:
        try:
            counter = ctypes.c_uint64.from_buffer(shared)
            os.sched_setaffinity(0, {cpu})
            if policy != os.SCHED_OTHER:
                os.sched_setscheduler(0, policy, os.sched_param(priority))
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                counter.value += 1
        finally:
            os._exit(0)
    try:
        yield lambda: struct.unpack_from("=Q", shared)[0]
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        shared.close()


class TestRunaway:
    """A mixer stuck in a cycle is demoted past the hard limit; the CPU is shared again."""

    def test_hard_limit_demotes_and_engine_keeps_running(self):
        wd = Watchdog(hard_limit_periods=4, cooldown=60)
        # The counter is forked before the engine starts: a fork copies this process's
        # mappings under the mm lock, and a mixer faulting a page in meanwhile (a sanitized
        # build's shadow memory is not locked) waited 11 ms for it once, past the hard limit.
        with counter_on(CPU) as count, Engine(watchdog=wd) as e:
            os.sched_setaffinity(e.mixer_tid, {CPU})
            time.sleep(0.2)
            assert e.events() == []
            e._test_spin(1.5)
            events = wait_for_event(e)
            assert [ev.reason for ev in events] == ["hard_limit"]
            ev = events[0]
            hard_ns = 4 * e.period_ns
            # demoted during the episode, once it passed the configured bound
            assert hard_ns < ev.busy_ns < 1.5e9
            assert ev.tid == e.mixer_tid and ev.result == 0
            assert ev.policy_before == os.SCHED_FIFO
            assert current_scheduling(e.mixer_tid).policy == "other"
            # a SCHED_OTHER process on the same CPU progresses while the mixer still spins
            before = count()
            time.sleep(0.3)
            assert e.stats().cycles == ev.cycle  # still inside the same cycle
            assert count() > before
            time.sleep(1.5)
            s = e.stats()
            assert s.cycles > ev.cycle + 10  # keeps running, demoted
            assert e.trace()["flags"][-1] & TRACE_DEMOTED
            assert {"WATCHDOG_DEMOTED"} <= s.taints and s.demotions == 1
            assert current_scheduling(e.mixer_tid).policy == "other"

    def test_overruns_in_row_demote(self):
        wd = Watchdog(budget=0.5, overruns_in_row=8, hard_limit_periods=50, cooldown=0)
        with Engine(watchdog=wd) as e:
            time.sleep(0.1)
            e._test_spin(0.7 * e.period_ns / 1e9, cycles=7)
            time.sleep(0.3)
            assert e.events() == []  # 7 in a row is not 8
            e._test_spin(0.7 * e.period_ns / 1e9, cycles=40)
            events = wait_for_event(e)
            assert events[0].reason == "overruns" and events[0].streak >= 8
            assert e.stats().overruns >= 15

    def test_repromote_only_after_cooldown(self):
        from streamcore.errors import RepromoteRefusedError

        with Engine(watchdog=Watchdog(cooldown=0.5)) as e:
            e._test_spin(0.1)
            assert wait_for_event(e)[0].reason == "hard_limit"
            with pytest.raises(RepromoteRefusedError):
                e.repromote()
            assert current_scheduling(e.mixer_tid).policy == "other"
            time.sleep(0.6)
            grant = e.repromote()
            assert grant.realtime and current_scheduling(e.mixer_tid).policy == "fifo"
            e._test_spin(0.1)  # rearmed: demotes again
            deadline = time.monotonic() + 5
            while len(e.events()) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert [ev.reason for ev in e.events()] == ["hard_limit", "hard_limit"]

    def test_a_mixer_that_is_not_realtime_is_left_alone(self):
        """Without realtime the mixer is only preempted, never a runaway that starves
        others: a cycle past the hard limit and a streak of overruns demote nothing (the
        overruns are still counted); once realtime, the same runaway is demoted."""
        wd = Watchdog(budget=0.5, overruns_in_row=4, hard_limit_periods=4, cooldown=0)
        with Engine(watchdog=wd, realtime=False) as e:
            assert current_scheduling(e.mixer_tid).policy == "other"
            time.sleep(0.1)
            e._test_spin(0.1)  # ~20 hard limits long
            time.sleep(0.3)  # that cycle is over before the next request replaces its length
            e._test_spin(0.7 * e.period_ns / 1e9, cycles=20)
            time.sleep(0.5)
            # 20 spinning cycles over budget are counted (19 once under a whole suite's load:
            # a late wake-up skips a period rather than running it); none demotes anything
            assert e.events() == [] and e.stats().overruns >= 15
            os.sched_setscheduler(e.mixer_tid, os.SCHED_FIFO, os.sched_param(e.priority))
            e._test_spin(0.1)
            assert [ev.reason for ev in wait_for_event(e)] == ["hard_limit"]
            assert current_scheduling(e.mixer_tid).policy == "other"

    def test_subscribe(self):
        seen = []
        with Engine() as e:
            e.subscribe(seen.append)
            e._test_spin(0.1)
            deadline = time.monotonic() + 5
            while not seen and time.monotonic() < deadline:
                time.sleep(0.01)
        assert [ev.reason for ev in seen] == ["hard_limit"]


class TestCanary:
    """A starved canary (realtime busy thread on its CPU) demotes the engine's RT threads."""

    def test_canary_starvation_demotes(self):
        wd = Watchdog(canary_ms=200, hard_limit_periods=1000, overruns_in_row=10**6)
        with Engine(priority=10, watchdog=wd) as e:
            os.sched_setaffinity(e.canary_tid, {CPU})
            os.sched_setaffinity(e.mixer_tid, {CPU})
            time.sleep(0.1)
            assert e.events() == []
            with counter_on(CPU, os.SCHED_FIFO, 5, seconds=1.5):
                events = wait_for_event(e, timeout=5)
            assert events and events[0].reason == "canary"
            assert events[0].canary_age_ns > 200e6
            assert events[0].threads == 2  # every RT thread: the mixer and the watchdog
            assert current_scheduling(e.mixer_tid).policy == "other"
            assert current_scheduling(e.watchdog_tid).policy == "other"
            assert "WATCHDOG_DEMOTED" in e.stats().taints


def _sigxcpu_child(write_fd: int) -> None:
    """In a forked child: a small RLIMIT_RTTIME, a runaway mixer; report what happened."""
    resource.setrlimit(resource.RLIMIT_RTTIME, (50_000, 2_000_000))  # µs: soft 50 ms, hard 2 s
    wd = Watchdog(hard_limit_periods=10**5, overruns_in_row=10**6)
    with Engine(watchdog=wd) as e:
        time.sleep(0.1)
        e._test_spin(1.0)
        time.sleep(1.3)
        result = {
            "events": [ev.reason for ev in e.events()],
            "taints": sorted(e.stats().taints),
            "sigxcpu": e.stats().sigxcpu,
            "policy": current_scheduling(e.mixer_tid).policy,
            "cycles_after": e.stats().cycles,
        }
    os.write(write_fd, pickle.dumps(result))


class TestRttime:
    """SIGXCPU at the soft RLIMIT_RTTIME demotes before the kernel's SIGKILL at the hard one."""

    def test_sigxcpu_demotes_instead_of_dying(self):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                os.close(r)
                _sigxcpu_child(w)
                status = 0
            finally:
                os._exit(status)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}"
        result = pickle.loads(data)
        assert result["events"][0] == "rttime"
        assert result["sigxcpu"] >= 1
        assert {"RTTIME_SIGNAL", "WATCHDOG_DEMOTED"} <= set(result["taints"])
        assert result["policy"] == "other"
