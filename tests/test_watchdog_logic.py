"""The watchdog's decision rule, driven on data (the native sc_watchdog_decide)."""

from __future__ import annotations

import pytest

from streamcore.watchdog import Watchdog, WatchdogLogic

P = 2_666_666  # ns: 128 frames at 48 kHz
MS = 1_000_000


def logic(**kw) -> WatchdogLogic:
    return WatchdogLogic(Watchdog(**kw), P)


class TestOverruns:
    """Budget overruns in a row, or one cycle past the hard limit, demote the mixer once."""

    def test_streak_below_the_limit_does_nothing(self):
        w = logic(overruns_in_row=8)
        for streak in range(8):
            assert w.decide(now_ns=10**9, streak=streak, canary_ns=10**9) is None

    def test_streak_at_the_limit_demotes_once(self):
        w = logic(overruns_in_row=8)
        assert w.decide(now_ns=10**9, streak=8, canary_ns=10**9) == "overruns"
        assert w.decide(now_ns=10**9, streak=9, canary_ns=10**9) is None  # already demoted
        w.rearm()
        assert w.decide(now_ns=10**9, streak=10, canary_ns=10**9) == "overruns"

    def test_a_running_cycle_past_the_hard_limit_demotes(self):
        w = logic(hard_limit_periods=4)
        now = 10**9
        assert w.decide(now_ns=now, busy_since_ns=now - 4 * P + 10, canary_ns=now) is None
        assert w.decide(now_ns=now, busy_since_ns=now - 4 * P - 10, canary_ns=now) == "hard_limit"

    def test_the_hard_limit_is_per_period_rendered(self):
        """A cycle rendering 3 periods at once (a pipe's reader took 3) has 3 limits."""
        w = logic(hard_limit_periods=4)
        now = 10**9
        busy = now - 10 * P
        assert w.decide(now_ns=now, busy_since_ns=busy, canary_ns=now, cycle_periods=3) is None
        assert w.decide(now_ns=now, busy_since_ns=busy, canary_ns=now,
                        cycle_periods=2) == "hard_limit"

    def test_a_finished_cycle_past_the_hard_limit_demotes(self):
        w = logic()
        assert w.decide(now_ns=10**9, canary_ns=10**9, hard_overruns=0) is None
        assert w.decide(now_ns=10**9, canary_ns=10**9, hard_overruns=1) == "hard_limit"

    def test_idle_mixer_is_never_over_the_limit(self):
        w = logic()
        assert w.decide(now_ns=10**12, busy_since_ns=0, canary_ns=10**12) is None


class TestCanary:
    """A silent canary demotes every RT thread, once until rearmed."""

    def test_canary_age(self):
        w = logic(canary_ms=200)
        now = 10**10
        assert w.decide(now_ns=now, canary_ns=now - 199 * MS) is None
        assert w.decide(now_ns=now, canary_ns=now - 201 * MS) == "canary"
        assert w.decide(now_ns=now + MS, canary_ns=now - 201 * MS) is None
        w.rearm()
        assert w.decide(now_ns=now + MS, canary_ns=now - 201 * MS) == "canary"

    def test_canary_fires_even_after_an_overrun_demotion(self):
        w = logic()
        now = 10**10
        assert w.decide(now_ns=now, streak=100, canary_ns=now) == "overruns"
        assert w.decide(now_ns=now, canary_ns=now - 300 * MS) == "canary"

    def test_no_cheep_yet_is_not_starvation(self):
        assert logic().decide(now_ns=10**10, canary_ns=0) is None


class TestRttime:
    """Each new SIGXCPU demotes, whatever the state."""

    def test_sigxcpu(self):
        w = logic()
        assert w.decide(now_ns=10**9, canary_ns=10**9, sigxcpu=1) == "rttime"
        assert w.decide(now_ns=10**9, canary_ns=10**9, sigxcpu=1) is None
        assert w.decide(now_ns=10**9, canary_ns=10**9, sigxcpu=2) == "rttime"


class TestConfig:
    """Settings are validated."""

    @pytest.mark.parametrize("kw", [{"budget": 0}, {"overruns_in_row": 0},
                                    {"hard_limit_periods": -1}, {"canary_ms": 0},
                                    {"cooldown": -1}])
    def test_bad_settings(self, kw):
        with pytest.raises(ValueError):
            Watchdog(**kw)
