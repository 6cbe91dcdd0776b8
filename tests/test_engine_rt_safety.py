"""Realtime safety of the real mixer thread, measured from /proc over a 10 s run.

One run (1 s warm-up, then 10 s measured) with buffer voices, a looping voice, gain and pan
changes and a stream voice fed from Python, shared by the tests of this module.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamcore import Engine
from tests.helpers.threads import thread_counters

pytestmark = pytest.mark.slow  # one 11 s run shared by the module

WARMUP = 1.0
MEASURE = 10.0


@pytest.fixture(scope="module")
def run():
    rng = np.random.default_rng(1)
    tone = (np.sin(np.arange(48000) * 2 * np.pi * 440 / 48000) * 0.1).astype(np.float32)
    clip = (rng.standard_normal((24000, 2)) * 0.05).astype(np.float32)
    with Engine() as e:
        looping = e.play(tone, loop=True, pan=-0.3)
        stream = e.stream(channels=2, frames=8192)
        stop = threading.Event()

        def feed():
            block = np.full((512, 2), 0.01, dtype=np.float32)
            while not stop.is_set():
                if stream.writable >= 512:
                    stream.write(block)
                time.sleep(0.003)

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            time.sleep(WARMUP)
            before = thread_counters(e.mixer_tid)
            stats_before = e.stats()
            end = time.monotonic() + MEASURE
            k = 0
            while time.monotonic() < end:  # keep the command path busy too
                e.play(clip, gain=0.2, pan=(k % 5 - 2) / 2)
                looping.gain = 0.5 + 0.4 * (k % 2)
                k += 1
                time.sleep(0.1)
            after = thread_counters(e.mixer_tid)
            stats_after = e.stats()
            events = e.events()
        finally:
            stop.set()
            feeder.join()
    return {"before": before, "after": after, "stats_before": stats_before,
            "stats": stats_after, "events": events, "plays": k}


class TestMeasurement:
    """The counters read here do move for a thread that faults and sleeps (the method works)."""

    def test_counters_move(self):
        tid = threading.get_native_id()
        before = thread_counters(tid)
        fresh = np.ones(4 << 20, dtype=np.uint8)  # 4 MiB of new pages, touched here
        time.sleep(0.01)
        after = thread_counters(tid)
        assert fresh.sum() == 4 << 20
        assert after["minflt"] - before["minflt"] >= 1  # (huge pages make it few)
        assert after["voluntary_ctxt_switches"] > before["voluntary_ctxt_switches"]


class TestMixerThread:
    """Zero page faults and no voluntary context switch beyond its one wait per cycle."""

    def test_no_page_faults(self, run):
        assert run["after"]["minflt"] - run["before"]["minflt"] == 0
        assert run["after"]["majflt"] - run["before"]["majflt"] == 0

    def test_one_voluntary_switch_per_cycle_at_most(self, run):
        cycles = run["stats"].cycles - run["stats_before"].cycles
        switches = (run["after"]["voluntary_ctxt_switches"]
                    - run["before"]["voluntary_ctxt_switches"])
        assert cycles >= MEASURE * 48000 / 128 * 0.5  # it really ran
        assert switches <= cycles + 1

    def test_no_demotion_in_a_normal_run(self, run):
        assert run["events"] == []
        assert run["stats"].demotions == 0
        assert "WATCHDOG_DEMOTED" not in run["stats"].taints

    def test_commands_were_applied(self, run):
        assert run["stats"].commands - run["stats_before"].commands >= 2 * run["plays"]
