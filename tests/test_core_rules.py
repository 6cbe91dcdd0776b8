"""The core's ownership rules that live in C (issue 13): any number of engines protected from
SIGXCPU with the handler chain restored after the last, close() bounded whatever the watchdog
interval, a finite output whatever the voices sum to, a driver's failure visible in stats."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from streamcore import Engine
from streamcore.errors import SinkError
from streamcore.watchdog import Watchdog

SIGXCPU_BIT = 1 << (signal.SIGXCPU - 1)


def caught_signals() -> int:
    """The process's SigCgt mask: signals with a handler installed (C or Python)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    raise AssertionError("no SigCgt in /proc/self/status")


def run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


class TestSigxcpu:
    """Every engine with a watchdog is protected, however many; the chain is restored after."""

    def test_more_engines_than_the_old_table_survive_sigxcpu(self):
        # 20 engines, the first 16 closed (the old table had 16 slots: the last 4 were never
        # registered, and once those 16 closed the default action killed the process).
        child = run_child("""
            import os, signal
            from streamcore import Engine
            engines = [Engine(sink="null", realtime=False) for _ in range(20)]
            for e in engines:
                e.start()
            for e in engines[:16]:
                e.close()
            os.kill(os.getpid(), signal.SIGXCPU)
            import time; time.sleep(0.2)
            print("sigxcpu", [e.stats().sigxcpu for e in engines[16:]])
            for e in engines[16:]:
                e.close()
            print("survived")
        """)
        assert child.returncode == 0, child.stderr
        assert "sigxcpu [1, 1, 1, 1]" in child.stdout
        assert "survived" in child.stdout

    def test_the_handler_is_installed_while_engines_run_and_removed_after(self):
        before = caught_signals() & SIGXCPU_BIT
        assert not before, "SIGXCPU already caught before any engine"
        engines = [Engine(sink="null", realtime=False) for _ in range(3)]
        try:
            for e in engines:
                e.start()
            assert caught_signals() & SIGXCPU_BIT
            engines[0].close()
            engines[1].close()
            assert caught_signals() & SIGXCPU_BIT  # one is still running
        finally:
            for e in engines:
                e.close()
        assert not caught_signals() & SIGXCPU_BIT

    def test_a_previous_handler_is_chained_and_restored(self):
        child = run_child("""
            import os, signal, time
            from streamcore import Engine
            seen = []
            signal.signal(signal.SIGXCPU, lambda s, f: seen.append(s))
            with Engine(sink="null", realtime=False) as e:
                os.kill(os.getpid(), signal.SIGXCPU)
                time.sleep(0.2)
                counted = e.stats().sigxcpu
            os.kill(os.getpid(), signal.SIGXCPU)   # after close: the app's handler alone
            time.sleep(0.1)
            print("counted", counted, "seen", len(seen),
                  "handler", signal.getsignal(signal.SIGXCPU) is not signal.SIG_DFL)
        """)
        assert child.returncode == 0, child.stderr
        assert "counted 1 seen 2 handler True" in child.stdout


class TestBoundedClose:
    """close() takes about a period, not the watchdog's interval or the canary's nap."""

    @pytest.mark.parametrize("sink", ["null", "external"])
    def test_close_does_not_wait_for_a_long_watchdog_interval(self, sink):
        e = Engine(sink=sink, realtime=False, watchdog=Watchdog(interval_ms=60000))
        e.start()
        time.sleep(0.1)
        began = time.monotonic()
        e.close()
        took = time.monotonic() - began
        # A generous bound that still fails by two orders of magnitude the old way (60 s).
        assert took < 5, f"close took {took:.1f} s"


class TestFiniteOutput:
    """Finite voices whose gains and sums overflow never put Inf/NaN (or a wrapped integer)
    in the output: zeroed, counted and tainted."""

    N = 64

    @pytest.mark.parametrize("dtype,top", [("float32", None), ("int16", 32767),
                                           ("int32", 2**31 - 1)])
    def test_an_overflowing_mix_is_zeroed_counted_and_tainted(self, dtype, top):
        huge = np.full((self.N, 2), 3e38, dtype=np.float32)  # finite, at the top of float
        with Engine(sink="manual", blocksize=self.N, dtype=dtype) as e:
            e.play(huge, gain=64.0)         # Inf after the gain
            e.play(-huge, gain=64.0)        # -Inf: Inf + -Inf is NaN
            e.play(huge[:, :1].copy(), gain=2.0)
            out = e.render(1)
            stats = e.stats()
        assert stats.output_nonfinite == self.N * 2
        assert "NONFINITE_OUTPUT" in stats.taints and not stats.clean
        if top is None:
            assert np.isfinite(out).all()
            assert (out == 0).all()
        else:
            assert (out == 0).all()  # zeroed before conversion: no wrapped integers

    def test_an_overflow_to_inf_alone_in_int_output_saturates_nowhere_else(self):
        huge = np.full((self.N, 2), 3e38, dtype=np.float32)
        ok = np.full((self.N, 2), 0.25, dtype=np.float32)
        with Engine(sink="manual", blocksize=self.N, dtype="int16") as e:
            e.play(huge, gain=64.0)
            e.render(1)
            e.play(ok)
            out = e.render(1)
            stats = e.stats()
        assert stats.output_nonfinite == self.N * 2   # the first period only
        assert (out == 8192).all()                   # the next one is exact again


class TestDriverFailure:
    """A driver that fails ends the mixer, and says so in the engine's figures."""

    def test_pipe_reader_gone_is_the_driver_error(self):
        from streamcore.sinks import PipeSink

        r, w = os.pipe()
        sink = PipeSink(w, format="s16le")
        e = Engine(sink=sink, realtime=False)
        try:
            e.start()
            os.close(r)
            deadline = time.monotonic() + 5
            while e.stats().driver_error == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            stats = e.stats()
            assert stats.driver_error == 32  # EPIPE
            assert not stats.running
            with pytest.raises(SinkError, match="EPIPE"):  # the failure, once, at close
                e.close()
        finally:
            e.close()
            os.close(w)
