"""Producers that wait instead of polling (issue 17): Ring.wait_writable/wait_readable (a
futex in the ring's shared page, woken by the peer's next advance, across processes too) and
StreamVoice.write(timeout=), which queues everything, waking as the mixer plays.

No wall-clock thresholds: a wait that should end is joined with a generous bound that only
catches a hang; what is asserted is that it ended, with what result."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import streamcore
from tests.services.common import wait_until

ROOT = Path(__file__).resolve().parent.parent
HANG = 10.0  # seconds: only a hang takes this long


def _in_thread(fn):
    """Run ``fn`` in a thread; returns (thread, box) where box["result"] or box["error"]."""
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


class TestRingWaits:
    def test_a_reader_wakes_when_frames_come(self):
        ring = streamcore.Ring(1024, 1, "float32", lock=False)
        thread, box = _in_thread(lambda: ring.wait_readable(100))
        time.sleep(0.05)
        assert thread.is_alive()  # nothing written yet: it waits
        ring.write(np.ones(60, np.float32))
        time.sleep(0.05)
        assert thread.is_alive()  # 60 < 100: still waiting
        ring.write(np.ones(40, np.float32))
        thread.join(HANG)
        assert not thread.is_alive() and box == {"result": True}
        ring.close()

    def test_a_writer_wakes_when_room_comes(self):
        ring = streamcore.Ring(1024, 2, "float32", lock=False)
        ring.write(np.zeros((ring.capacity, 2), np.float32))
        thread, box = _in_thread(lambda: ring.wait_writable(256))
        time.sleep(0.05)
        assert thread.is_alive()
        ring.release(256)
        thread.join(HANG)
        assert box == {"result": True}
        ring.close()

    def test_asyncio_waits_for_frames_and_room(self):
        ring = streamcore.Ring(1024, 1, "float32", lock=False)

        async def main() -> tuple[bool, bool, bool]:
            threading.Timer(0.05, lambda: ring.write(np.ones(100, np.float32))).start()
            readable = await ring.await_readable(100, timeout=HANG)
            ring.write(np.ones(ring.capacity - 100, np.float32))  # full now
            threading.Timer(0.05, lambda: ring.release(256)).start()
            writable = await ring.await_writable(256, timeout=HANG)
            timed_out = await ring.await_readable(ring.capacity, timeout=0.01)
            return readable, writable, timed_out

        assert asyncio.run(main()) == (True, True, False)
        ring.close()

    def test_cancelling_an_asyncio_wait_ends_its_thread(self):
        """The executor thread blocked in the futex is woken at the cancel: asyncio.run
        (which joins the executor at its end) returns."""
        ring = streamcore.Ring(1024, 1, "float32", lock=False)

        async def main() -> bool:
            task = asyncio.ensure_future(ring.await_readable(1))  # no timeout: forever
            await asyncio.sleep(0.05)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return True
            return False

        thread, box = _in_thread(lambda: asyncio.run(main()))
        thread.join(HANG)
        assert not thread.is_alive(), "the cancelled wait's thread kept waiting"
        assert box == {"result": True}
        ring.close()

    def test_timeouts(self):
        ring = streamcore.Ring(1024, 1, "float32", lock=False)
        assert ring.wait_readable(1, timeout=0.01) is False
        assert ring.wait_readable(0, timeout=0) is True
        assert ring.wait_writable(ring.capacity, timeout=0) is True
        ring.close()

    @pytest.mark.parametrize(("frames", "timeout", "error"), [
        (-1, None, ValueError), (1 << 40, None, ValueError), (1.5, None, TypeError),
        (1, -1, ValueError), (1, float("nan"), ValueError)])
    def test_bad_arguments(self, frames, timeout, error):
        ring = streamcore.Ring(1024, 1, "float32", lock=False)
        with pytest.raises(error):
            ring.wait_readable(frames, timeout)
        ring.close()

    def test_another_process_wakes_a_waiting_reader(self):
        """The futex is in the shared page: a writer in another process wakes us."""
        ring = streamcore.Ring(4096, 1, "float32", lock=False)
        code = ("import sys, time, numpy as np\n"
                "from streamcore import Ring\n"
                "ring = Ring.attach(int(sys.argv[1]), lock=False)\n"
                "time.sleep(0.2)\n"
                "ring.write(np.full(500, 7, np.float32))\n")
        child = subprocess.Popen([sys.executable, "-c", code, str(ring.fd)],
                                 pass_fds=[ring.fd], cwd=ROOT)
        try:
            assert ring.wait_readable(500, timeout=HANG) is True
            assert ring.read(500)[:, 0].tolist() == [7.0] * 500
        finally:
            assert child.wait(HANG) == 0
            ring.close()


class TestBlockingWrite:
    def test_everything_is_queued_and_played(self, tmp_path):
        """48000 frames through a 1024-frame ring: write() returns once all are queued, and
        the file the engine renders (a reader's clock: a starving stream voice is waited
        for, never replaced by silence) holds every one of them, bit-exact, in order."""
        import soundfile as sf

        from streamcore.sinks import FileSink

        rate = 48000
        data = np.random.default_rng(1).uniform(-0.5, 0.5, (rate, 2)).astype(np.float32)
        path = tmp_path / "out.wav"
        with streamcore.Engine(samplerate=rate, blocksize=128,
                               sink=FileSink(str(path))) as engine:
            voice = engine.stream(channels=2, frames=1024)
            assert voice.write(data) == rate
            voice.finish()
            assert voice.wait(HANG)
            engine.drain(timeout=HANG)
        assert voice.frames_played == rate
        written, _rate = sf.read(path, dtype="float32", always_2d=True)
        assert np.array_equal(written, data)

    def test_a_timeout_returns_what_was_queued(self):
        with streamcore.Engine(sink="null") as engine:
            engine.stop()
            voice = engine.stream(channels=1, frames=1024)
            # not running: nothing will make room, so no wait at all
            assert voice.write(np.zeros(5000, np.float32)) == voice.ring.capacity
        with streamcore.Engine(sink="null") as engine:
            voice = engine.stream(channels=1, frames=1024)
            got = voice.write(np.zeros(10**6, np.float32), timeout=0.05)
            assert voice.ring.capacity <= got < 10**6

    def test_a_stopped_voice_wakes_its_writer(self):
        with streamcore.Engine(sink="null") as engine:
            voice = engine.stream(channels=1, frames=1024)
            thread, box = _in_thread(lambda: voice.write(np.zeros(10**7, np.float32)))
            time.sleep(0.2)
            voice.stop(0)
            thread.join(HANG)
            assert not thread.is_alive(), "the writer still waits for a voice that ended"
            assert 0 < box["result"] < 10**7 and voice.done

    def test_the_end_is_seen_before_its_return_is_taken(self):
        """A writer woken by its voice's end must see the end even before anyone took the
        mixer's return (CI once saw a writer wait again in that gap, for 10 s): the mixer
        marks the end before it wakes the ring."""
        with streamcore.Engine(sink="null") as engine:
            voice = engine.stream(channels=1, frames=1024)
            table = voice._table
            assert not table.ended(voice)
            voice.stop(0)
            assert wait_until(lambda: table.ended(voice), HANG)
            assert voice.done and table.ended(voice)
            again = engine.stream(channels=1, frames=1024)  # a new voice (maybe in the same slot)
            assert not table.ended(again)

    def test_a_stopped_engine_wakes_its_writers(self):
        with streamcore.Engine(sink="null") as engine:
            voice = engine.stream(channels=1, frames=1024)
            thread, box = _in_thread(lambda: voice.write(np.zeros(10**7, np.float32)))
            time.sleep(0.2)
            engine.stop()
            thread.join(HANG)
            assert not thread.is_alive(), "the writer still waits on a stopped engine"
            assert 0 < box["result"] < 10**7

    def test_bad_timeout(self):
        with streamcore.Engine(sink="null") as engine:
            voice = engine.stream(channels=1)
            for bad in (-1, float("nan"), "1"):
                with pytest.raises((TypeError, ValueError), match="timeout"):
                    voice.write(np.zeros(4, np.float32), timeout=bad)


def test_a_wait_leaves_nothing_behind():
    """No thread and no descriptor per wait (a futex needs neither)."""
    ring = streamcore.Ring(1024, 1, "float32", lock=False)
    fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
    for _ in range(20):
        ring.wait_readable(1, timeout=0.001)
    assert len(os.listdir("/proc/self/fd")) == fds and threading.active_count() == threads
    ring.close()


def _switches() -> int:
    """This thread's voluntary context switches so far (each sleep-and-wake is one)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


class TestWaitingForTheEnd:
    """Voice.wait() and ``await voice.await_end()`` sleep until the mixer hands the voice
    back: the waiting thread wakes a handful of times, not once per poll (a 2 ms poll made
    ~250 wake-ups in half a second)."""

    def test_wait_sleeps_until_the_end(self):
        tone = np.zeros((24000, 2), np.float32)  # 0.5 s
        with streamcore.Engine(sink="null") as engine:
            voice = engine.play(tone)
            before = _switches()
            assert voice.wait(HANG) and voice.end_reason == "finished"
            woke = _switches() - before
        assert woke < 20, f"the waiting thread woke {woke} times"

    def test_asyncio_streams_and_waits_without_polling(self):
        import asyncio

        rate = 48000
        data = np.random.default_rng(3).uniform(-0.5, 0.5, (rate // 2, 2)).astype(np.float32)

        async def main(engine: streamcore.Engine) -> tuple[str, int]:
            voice = engine.play(data)
            before = _switches()
            reason = await voice.await_end()
            return reason, _switches() - before

        with streamcore.Engine(samplerate=rate, sink="null") as engine:
            reason, woke = asyncio.run(main(engine))
        assert reason == "finished"
        assert woke < 20, f"the event loop's thread woke {woke} times"

    def test_closing_the_engine_ends_the_wait(self):
        engine = streamcore.Engine(sink="null")
        engine.start()
        voice = engine.play(np.zeros((48000 * 60, 2), np.float32))
        thread, box = _in_thread(lambda: voice.wait())
        time.sleep(0.1)
        engine.close()
        thread.join(HANG)
        assert not thread.is_alive() and box == {"result": True}
        assert voice.end_reason == "flushed"

    def test_many_waiters_and_many_ends(self):
        with streamcore.Engine(sink="null") as engine:
            voices = [engine.play(np.zeros((480 * (k + 1), 2), np.float32)) for k in range(16)]
            threads = [_in_thread(v.wait) for v in voices]
            for thread, box in threads:
                thread.join(HANG)
                assert box == {"result": True}
        assert all(v.end_reason == "finished" for v in voices)


class TestAsyncioWrite:
    def test_a_stream_through_a_small_ring(self):
        """An asyncio program streams 1 s through a 2048-frame ring with awrite() and waits
        for the end: everything is played, in order; the loop's thread wakes about once per
        mixer cycle while it waits for room (the mixer's progress fd), not once per poll."""
        import asyncio

        rate, blocksize = 48000, 1024
        data = np.random.default_rng(4).uniform(-0.5, 0.5, (rate, 2)).astype(np.float32)

        async def main(engine: streamcore.Engine) -> dict:
            voice = engine.stream(channels=2, frames=2048)
            cycles, before = engine.stats().cycles, _switches()
            queued = 0
            for start in range(0, rate, 4800):
                queued += await voice.awrite(data[start:start + 4800])
            voice.finish()
            reason = await voice.await_end()
            return {"queued": queued, "reason": reason, "woke": _switches() - before,
                    "cycles": engine.stats().cycles - cycles, "voice": voice}

        with streamcore.Engine(samplerate=rate, blocksize=blocksize, sink="null") as engine:
            got = asyncio.run(main(engine))
        voice = got["voice"]
        assert got["queued"] == rate and got["reason"] == "finished"
        assert voice.frames_played == rate and voice.underruns == 0
        assert got["woke"] <= got["cycles"] + 10, got

    def test_a_timeout(self):
        import asyncio

        async def main(engine: streamcore.Engine) -> int:
            voice = engine.stream(channels=1, frames=1024)
            return await voice.awrite(np.zeros(10**6, np.float32), timeout=0.05)

        with streamcore.Engine(sink="null") as engine:
            queued = asyncio.run(main(engine))
        assert 1024 <= queued < 10**6
