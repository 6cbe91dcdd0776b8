"""The running engine: mixer thread, timer clock with the null sink, voices, telemetry."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from streamcore import Engine, current_scheduling
from streamcore.errors import EngineClosedError, VoiceLimitError
from streamcore.telemetry import TRACE_DTYPE


def timer_slack_ns(tid: int) -> int:
    with open(f"/proc/{tid}/timerslack_ns") as f:
        return int(f.read())


def read_comm(tid: int) -> str:
    with open(f"/proc/self/task/{tid}/comm") as f:
        return f.read().strip()


class TestLifeCycle:
    """start/stop/close are idempotent; the with block starts and closes."""

    def test_with_block_runs_and_closes(self):
        with Engine() as e:
            assert e.running and e.mixer_tid > 0
            time.sleep(0.1)
            assert e.stats().cycles > 0
        assert e.closed and not e.running
        with pytest.raises(EngineClosedError):
            e.stats()

    def test_idempotent(self):
        e = Engine()
        e.start()
        e.start()
        e.stop()
        e.stop()
        e.close()
        e.close()
        with pytest.raises(EngineClosedError):
            e.play(np.zeros(10, dtype=np.float32))
        with pytest.raises(EngineClosedError):
            e.start()

    def test_restart_after_stop(self):
        with Engine() as e:
            time.sleep(0.05)
            e.stop()
            cycles = e.stats().cycles
            assert not e.stats().running
            e.start()
            time.sleep(0.05)
            assert e.stats().cycles > cycles and e.grant.realtime
            v = e.play(np.zeros(480, dtype=np.float32))
            assert v.wait(5.0)

    def test_threads_are_named_and_scheduled(self):
        with Engine(priority=10) as e:
            assert read_comm(e.mixer_tid) == "sc-mixer"
            assert read_comm(e.watchdog_tid) == "sc-watchdog"
            assert read_comm(e.canary_tid) == "sc-canary"
            assert e.grant.method == "direct" and e.grant.realtime
            mixer = current_scheduling(e.mixer_tid)
            assert (mixer.policy, mixer.priority, mixer.reset_on_fork) == ("fifo", 10, True)
            watchdog = current_scheduling(e.watchdog_tid)
            assert watchdog.realtime and watchdog.priority == 11
            assert current_scheduling(e.canary_tid).policy == "other"
            assert "RT_DENIED" not in e.stats().taints
            assert timer_slack_ns(e.mixer_tid) <= 1

    def test_without_watchdog(self):
        with Engine(watchdog=False) as e:
            time.sleep(0.05)
            assert e.watchdog_tid == 0 and e.canary_tid == 0 and e.watchdog_grant is None
            e._test_spin(0.05)
            time.sleep(0.15)
            assert e.events() == [] and e.stats().cycles > 10

    def test_realtime_off_is_a_taint(self):
        with Engine(realtime=False) as e:
            assert e.grant is None
            assert current_scheduling(e.mixer_tid).policy == "other"
            assert "RT_DENIED" in e.stats().taints and not e.stats().clean
            assert timer_slack_ns(e.mixer_tid) == 1  # (realtime threads report 0)

    def test_children_forked_while_running_are_sched_other(self):
        with Engine() as e:
            assert current_scheduling(e.mixer_tid).reset_on_fork
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report its policy, then leave at once
                os.write(w, str(os.sched_getscheduler(0)).encode())
                os._exit(0)
            os.close(w)
            policy = int(os.read(r, 16))
            os.close(r)
            os.waitpid(pid, 0)
            assert policy == os.SCHED_OTHER


    def test_forked_child_does_not_touch_the_engine(self):
        with Engine() as e:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    e.close()  # must not join the parent's threads
                    try:
                        e.stats()
                        answer = b"open"
                    except EngineClosedError:
                        answer = b"closed"
                    os.write(w, answer)
                finally:
                    os._exit(0)
            os.close(w)
            answer = os.read(r, 16)
            os.close(r)
            _, status = os.waitpid(pid, 0)
            assert answer == b"closed" and status == 0
            cycles = e.stats().cycles
            time.sleep(0.05)
            assert e.stats().cycles > cycles  # the parent's engine runs on


class TestVoicesLive:
    """Voices play on the running engine and come back through the return queue."""

    def test_one_shot_is_returned(self):
        with Engine() as e:
            data = np.full((2400, 2), 0.25, dtype=np.float32)
            v = e.play(data)
            assert v.wait(5.0)
            assert v.end_reason == "finished" and v.frames_played == 2400
            assert e.voices == []

    def test_stop_with_fade(self):
        with Engine() as e:
            v = e.play(np.full(480, 0.1, dtype=np.float32), loop=True)
            time.sleep(0.05)
            v.stop(fade=0.01)
            assert v.wait(5.0) and v.end_reason == "stopped"

    def test_many_voices_at_once(self):
        with Engine() as e:
            data = np.full(4800, 0.001, dtype=np.float32)
            voices = [e.play(data, loop=True, pan=(i % 21 - 10) / 10) for i in range(256)]
            time.sleep(0.2)
            s = e.stats()
            assert s.voices == 256
            for v in voices:
                v.stop(fade=0.001)
            assert all(v.wait(5.0) for v in voices)

    def test_stream_voice_plays_what_is_written(self):
        with Engine() as e:
            v = e.stream(channels=2, frames=48000)
            v.write(np.full((4800, 2), 0.5, dtype=np.float32))
            deadline = time.monotonic() + 5
            while v.stats()["frames_played"] < 4800 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert v.ring.readable == 0
            time.sleep(0.05)
            assert v.stats()["underruns"] >= 1  # then silence, counted
            assert e.stats().underruns_per_voice[v.id] >= 1
            v.stop()
            assert v.wait(5.0)


class TestTelemetry:
    """Per-period figures: counts match the clock, histograms match the cycles."""

    def test_period_count_matches_elapsed_time(self):
        """Every deadline from start to stop is one cycle (or one skipped period)."""
        with Engine() as e:
            time.sleep(1.0)
            before = time.monotonic_ns()
            e.stop()  # the mixer finishes the tick that is due, then exits
            after = time.monotonic_ns()
            s = e.stats()
        ticks = s.cycles + s.skipped
        assert (before - s.start_ns) // e.period_ns <= ticks
        assert ticks <= (after - s.start_ns) // e.period_ns + 1
        if s.skipped == 0:  # the prefill, then one per cycle
            assert s.periods == e.periods + s.cycles
        assert s.wake_latency.count == s.mix_time.count == s.cycles

    def test_histograms_and_trace_after_stop(self):
        e = Engine()
        e.start()
        time.sleep(0.5)
        e.stop()
        s = e.stats()
        trace = e.trace()
        e.close()
        assert s.wake_latency.count == s.mix_time.count == s.cycles > 100
        assert sum(s.wake_latency.buckets) == s.cycles
        assert trace.dtype == TRACE_DTYPE and len(trace) == s.cycles
        assert np.array_equal(trace["cycle"], np.arange(s.cycles))
        assert (np.diff(trace["wake_ns"]) > 0).all()
        assert trace["mix_ns"].max() == s.mix_time.max_ns
        assert trace["late_ns"].min() == s.wake_latency.min_ns
        assert 0 < s.wake_latency.percentile(50) <= s.wake_latency.percentile(99)
        assert (trace["fill"] == e.periods * e.blocksize).mean() > 0.9

    def test_trace_is_readable_while_running(self):
        with Engine() as e:
            time.sleep(0.2)
            first = e.trace()
            time.sleep(0.2)
            second = e.trace()
            assert len(second) > len(first) > 0
            assert second["cycle"][len(first) - 1] == first["cycle"][-1]


def _run_unprivileged_engine() -> dict:
    with Engine() as e:
        time.sleep(0.3)
        s = e.stats()
        return {"cycles": s.cycles, "taints": sorted(s.taints),
                "realtime": bool(e.grant and e.grant.realtime),
                "reasons": list(e.grant.reasons) if e.grant else []}


class TestUnprivileged:
    """Without privileges or mlock budget the engine runs anyway, and says so in its taints."""

    def test_runs_tainted(self, unprivileged):
        import resource

        outcome = unprivileged.run(_run_unprivileged_engine,
                                   rlimits={resource.RLIMIT_MEMLOCK: (65536, 65536)})
        result = outcome.unwrap()
        assert result["cycles"] > 10
        assert "MLOCK_FAILED" in result["taints"]
        assert ("RT_DENIED" in result["taints"]) == (not result["realtime"])
        if not result["realtime"]:
            assert result["reasons"]  # why, in words


class TestConsumerClock:
    """sink='external': a sink takes a period and signals; the mixer renders the next one."""

    def test_consumer_drives_the_mixer_in_order(self):
        n = 128
        ramp = (np.arange(n * 40, dtype=np.float32) / (n * 40))[:, None].repeat(2, axis=1)
        with Engine(sink="external", blocksize=n) as e:
            assert e.output.readable == 2 * n  # prefilled: double buffering
            e.play(ramp.copy(), at=2 * n)       # after the two silent prefill periods
            got = []
            for _ in range(42):
                got.append(e.output.read(n))
                e.period_consumed()
                deadline = time.monotonic() + 2
                while e.output.readable < 2 * n and time.monotonic() < deadline:
                    time.sleep(0.0005)
            s = e.stats()
        out = np.concatenate(got)
        assert not out[: 2 * n].any()
        assert np.array_equal(out[2 * n:], ramp)
        assert s.consumed == 42 and s.cycles == 42 and s.xruns == 0
        assert s.wake_latency.count == 42

    def test_underrun_report_is_an_xrun(self):
        with Engine(sink="external") as e:
            e.period_consumed(underrun=True)
            deadline = time.monotonic() + 2
            while e.stats().cycles < 1 and time.monotonic() < deadline:
                time.sleep(0.001)
            s = e.stats()
            assert s.xruns == 1 and "XRUN" in s.taints


class TestConsistentStats:
    """stats(consistent=True) goes through the command queue and is exact to one cycle."""

    def test_snapshot_while_running(self):
        with Engine() as e:
            time.sleep(0.2)
            for _ in range(20):
                s = e.stats(consistent=True)
                assert s.wake_latency.count == s.mix_time.count == s.cycles > 0
                assert s.running
            later = e.stats(consistent=True)
            assert later.cycles > s.cycles
            assert later.commands >= 21  # each request is one command


class TestIntegerOutputLive:
    """The output ring carries the engine's dtype."""

    def test_int16_output_ring(self):
        n = 128
        with Engine(sink="external", blocksize=n, dtype="int16") as e:
            assert e.output.dtype == np.int16
            e.play(np.full((n * 4, 2), 0.5, dtype=np.float32), at=2 * n)
            got = []
            for _ in range(6):
                got.append(e.output.read(n))
                e.period_consumed()
                deadline = time.monotonic() + 2
                while e.output.readable < 2 * n and time.monotonic() < deadline:
                    time.sleep(0.0005)
        out = np.concatenate(got)
        assert not out[: 2 * n].any() and (out[2 * n:] == 16384).all()


class TestConcurrentCallers:
    """Several Python threads add, change and stop voices at once: every voice comes back."""

    def test_threads_play_and_stop(self):
        import threading

        data = np.full(960, 0.001, dtype=np.float32)
        errors = []
        voices = []
        with Engine() as e:
            def worker(k):
                try:
                    for i in range(150):
                        while True:  # all slots busy on a slow machine: wait for one
                            try:
                                v = e.play(data, loop=(i % 3 == 0), pan=((i + k) % 5 - 2) / 2)
                                break
                            except VoiceLimitError:
                                time.sleep(0.01)
                        v.gain = 0.5
                        if i % 3 == 0:
                            v.stop(fade=0.001)
                        voices.append(v)
                except Exception as exc:  # reported below, with the thread's context
                    errors.append(exc)

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            assert all(v.wait(10.0) for v in voices)
            assert e._table.free_slots == 256 and e.voices == []
            assert e.stats(consistent=True).voices == 0


def test_a_stream_voice_underrun_taints_the_run_and_is_a_glitch():
    """A producer that falls behind: the silence played is counted in stats().glitches and
    the UNDERRUN taint makes the run not clean (it stayed 'clean' before)."""
    with Engine(blocksize=128, sink="null", realtime=False) as e:
        voice = e.stream(channels=2)
        voice.write(np.zeros((256, 2), np.float32))  # primed, then nothing more
        time.sleep(0.1)
        stats = e.stats()
        voice.stop(fade=0)
    assert stats.underruns > 0 and stats.glitches["voices"] == stats.underruns
    assert "UNDERRUN" in stats.taints and not stats.clean
