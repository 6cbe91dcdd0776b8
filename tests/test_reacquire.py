"""Taking realtime back (issue 18): someone else demotes the running mixer (here an
administrator's ``chrt``, a real process acting from outside); the watchdog sees it at its
next look, the engine reports it (event, taint, count) and, by its ``reacquire`` policy,
asks again through the same chain, or not.  The backoff's schedule is checked on the
Reacquirer itself with a scripted chain (what rtkit would answer during its refusal period).

Times are never asserted: a wait for the engine's report has a generous bound, and its
figure is printed.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from streamcore import Engine, current_scheduling
from streamcore import reacquire as reacquire_module
from streamcore.realtime import RealtimeGrant

MAX_WAIT = 15.0


def _realtime_or_skip(engine: Engine) -> None:
    if not current_scheduling(engine.mixer_tid).realtime:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the mixer did not get realtime in CI: {engine.grant}")
        pytest.skip(f"no realtime for the mixer here: {engine.grant}")


def _chrt_other(tid: int) -> None:
    """What an administrator does: the thread to SCHED_OTHER, from another process."""
    subprocess.run(["chrt", "--other", "--pid", "0", str(tid)], check=True)


class _Events:
    """An engine's events as they arrive, waited for by reason."""

    def __init__(self, engine: Engine) -> None:
        self._seen: list = []
        self._changed = threading.Condition()
        engine.subscribe(self._add)

    def _add(self, event) -> None:
        with self._changed:
            self._seen.append(event)
            self._changed.notify_all()

    def wait(self, reason: str, count: int = 1, timeout: float = MAX_WAIT) -> list:
        with self._changed:
            self._changed.wait_for(
                lambda: sum(e.reason == reason for e in self._seen) >= count, timeout)
            return [e for e in self._seen if e.reason == reason]


class TestOutsideDemotion:
    @pytest.mark.parametrize("policy", ["once", "backoff"])
    def test_the_engine_sees_it_and_takes_realtime_back(self, policy):
        with Engine(sink="null", reacquire=policy) as engine:
            _realtime_or_skip(engine)
            events = _Events(engine)
            before = current_scheduling(engine.mixer_tid)
            demoted = time.monotonic()
            _chrt_other(engine.mixer_tid)
            (lost,) = events.wait("lost_realtime")
            seen = time.monotonic()
            (regained,) = events.wait("realtime_regained")
            back = time.monotonic()
            after = current_scheduling(engine.mixer_tid)
            stats = engine.stats()
        assert lost.tid == engine.mixer_tid
        assert before.policy == "fifo" and lost.policy_before == os.SCHED_FIFO
        assert lost.result == os.SCHED_OTHER  # what it had when the watchdog looked
        assert "REALTIME_LOST" in stats.taints and stats.realtime_losses == 1
        assert "WATCHDOG_DEMOTED" not in stats.taints and stats.demotions == 0  # not ours
        assert after.realtime and after.priority == before.priority
        assert stats.reacquire["regained"] == 1 and stats.reacquire["last"]["method"] == "direct"
        assert "via direct" in regained.detail
        print(f"\nchrt -> reported after {(seen - demoted) * 1000:.0f} ms, realtime again "
              f"after {(back - demoted) * 1000:.0f} ms ({policy})")

    def test_never_reports_and_leaves_it(self):
        with Engine(sink="null", reacquire="never") as engine:
            _realtime_or_skip(engine)
            events = _Events(engine)
            _chrt_other(engine.mixer_tid)
            assert events.wait("lost_realtime")
            time.sleep(2 * reacquire_module.FIRST_DELAY_S)  # when 'once' would have asked
            assert not current_scheduling(engine.mixer_tid).realtime
            stats = engine.stats()
        assert stats.realtime_losses == 1 and "REALTIME_LOST" in stats.taints
        assert stats.reacquire["attempts"] == 0 and not events.wait("realtime_regained",
                                                                    timeout=0)

    def test_a_second_loss_is_seen_and_taken_back_too(self):
        with Engine(sink="null", reacquire="once") as engine:
            _realtime_or_skip(engine)
            events = _Events(engine)
            for n in (1, 2):
                _chrt_other(engine.mixer_tid)
                assert len(events.wait("lost_realtime", n)) == n
                assert len(events.wait("realtime_regained", n)) == n
            stats = engine.stats()
        assert stats.realtime_losses == 2 and stats.reacquire["regained"] == 2

    def test_the_watchdogs_own_demotion_is_not_a_loss(self):
        with Engine(sink="null", blocksize=64, reacquire="backoff") as engine:
            _realtime_or_skip(engine)
            engine._test_spin(0.5, 1)  # a runaway cycle: the watchdog demotes it
            deadline = time.monotonic() + MAX_WAIT
            while engine.stats().demotions == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)  # more watchdog looks at the demoted mixer
            stats = engine.stats()
        assert stats.demotions == 1 and stats.realtime_losses == 0
        assert "REALTIME_LOST" not in stats.taints and stats.reacquire["attempts"] == 0

    def test_a_bad_policy(self):
        with pytest.raises(ValueError, match="reacquire must be one of"):
            Engine(sink="null", reacquire="always")


def _grant(realtime: bool) -> RealtimeGrant:
    return RealtimeGrant(method="rtkit" if realtime else "none",
                         policy="rr" if realtime else "other", priority=10 if realtime else 0,
                         nice=0, rttime_soft_us=200000, rttime_hard_us=200000,
                         reset_on_fork=True,
                         reasons=() if realtime else ("rtkit: refused (refuse period)",),
                         tid=1)


class TestBackoffSchedule:
    """The Reacquirer alone, its chain scripted: refused until the Nth attempt, as rtkit
    refuses during the refuse period after its canary fired."""

    def _run(self, policy: str, refusals: int, monkeypatch) -> tuple[list[float], dict]:
        monkeypatch.setattr(reacquire_module, "FIRST_DELAY_S", 0.01)
        asked: list[float] = []
        done = threading.Event()

        def acquire() -> RealtimeGrant:
            asked.append(time.monotonic())
            return _grant(len(asked) > refusals)

        reacquirer = reacquire_module.Reacquirer(policy, acquire, lambda grant: done.set())
        reacquirer.lost()
        done.wait(MAX_WAIT) if policy == "backoff" else time.sleep(0.5)
        stats = reacquirer.stats()
        reacquirer.close()
        return asked, stats

    def test_backoff_doubles_until_granted(self, monkeypatch):
        asked, stats = self._run("backoff", 4, monkeypatch)
        assert len(asked) == 5 and stats["regained"] == 1 and not stats["pending"]
        # each refusal doubled the wait before the next attempt (times are not asserted)
        assert stats["next_delay_s"] == pytest.approx(0.01 * 2 ** 4)

    def test_once_asks_once(self, monkeypatch):
        asked, stats = self._run("once", 4, monkeypatch)
        assert len(asked) == 1 and stats["regained"] == 0
        assert stats["last"]["reasons"] == ["rtkit: refused (refuse period)"]

    def test_the_delay_is_capped(self, monkeypatch):
        monkeypatch.setattr(reacquire_module, "MAX_DELAY_S", 0.04)
        asked, stats = self._run("backoff", 5, monkeypatch)
        assert len(asked) == 6 and stats["next_delay_s"] == 0.04

    def test_close_cancels_what_is_planned(self, monkeypatch):
        monkeypatch.setattr(reacquire_module, "FIRST_DELAY_S", 30.0)
        asked: list[float] = []
        reacquirer = reacquire_module.Reacquirer("backoff", lambda: asked.append(1),
                                                 lambda grant: None)
        reacquirer.lost()
        assert reacquirer.stats()["pending"]
        reacquirer.close()
        assert not reacquirer.stats()["pending"] and asked == []
