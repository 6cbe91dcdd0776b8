"""Producers that the GIL cannot starve, and peers that notice each other (issue 17).

- A ring's two sides know each other: each claims its side in the shared page on first use;
  a side that closes shows 'closed', one that is SIGKILLed 'dead' (its pidfd), and the
  other side's writes and waits raise PeerGoneError instead of spinning on a ring that never
  moves again.
- ``Engine.stream(producer=f)`` runs ``f`` in a process of its own writing the voice's ring:
  what it writes arrives bit-exact; its return finishes the voice after the last frame; its
  death (SIGKILL, an exception) ends the voice 'producer_died' with an event; the engine's
  end (stop, close, SIGKILL of the engine's process) makes the producer's next write raise.
- Under a CPU-heavy main thread (bench/load.py's load) a process producer streams 10 s with
  no underrun; the README's thread producer is measured under the same load and printed.

Times from a kill to its notice are measured and printed, not asserted (tests assert no
wall-clock figure); what is asserted is that the notice came (no wait ran to its timeout).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import streamcore
from bench.load import Load
from streamcore import PeerGoneError, Ring
from tests.helpers import producers
from tests.helpers.producers import pattern

ROOT = Path(__file__).resolve().parents[1]
RATE, BLOCK = 48000, 128


def _child(code: str, *fds: int) -> subprocess.Popen:
    """A Python child (the repository on its path) that inherits ``fds``."""
    source = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(code)
    return subprocess.Popen([sys.executable, "-c", source], pass_fds=fds, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _line(child: subprocess.Popen) -> str:
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    assert line, f"the child said nothing; stderr: {child.stderr.read() if child.stderr else ''}"
    return line


# ---- the ring's two sides --------------------------------------------------------------------


WRITER_CHILD = """
    import time
    import numpy as np
    from streamcore import Ring
    ring = Ring.attach({fd}, lock=False)
    ring.write(np.ones((64, 2), np.float32))
    print("wrote", flush=True)
    if {close}:
        ring.close()
        print("closed", flush=True)
    time.sleep(60)
"""

READER_CHILD = """
    import time
    from streamcore import Ring
    ring = Ring.attach({fd}, lock=False)
    ring.read(0)
    print("reading", flush=True)
    time.sleep(60)
"""


class TestRingSides:
    def test_a_new_ring_has_no_sides_yet(self):
        with Ring(1024, 2) as ring:
            stats = ring.stats
            assert (stats.writer.state, stats.reader.state) == ("none", "none")
            with pytest.raises(ValueError, match="has not written nor read"):
                ring.peer  # noqa: B018

    def test_sides_in_one_process_are_alive(self):
        with Ring(1024, 2) as ring, Ring.attach(ring.fd) as reader:
            ring.write(np.zeros((8, 2), np.float32))
            reader.read(8)
            assert ring.peer.state == "alive" and ring.peer.pid == os.getpid()
            assert reader.peer.side == "writer" and reader.peer.state == "alive"

    def test_a_killed_writer_is_dead_and_the_reader_wait_raises(self):
        with Ring(1024, 2) as ring:
            child = _child(WRITER_CHILD.format(fd=ring.fd, close=False), ring.fd)
            try:
                assert _line(child) == "wrote"
                assert ring.stats.writer.state == "alive"
                assert ring.stats.writer.pid == child.pid
                assert ring.read(64).shape == (64, 2)  # what it wrote is read first
                result: dict[str, object] = {}

                def wait() -> None:
                    try:
                        result["returned"] = ring.wait_readable(1, timeout=30)
                    except PeerGoneError as e:
                        result["error"] = e
                        result["at"] = time.monotonic()

                waiter = threading.Thread(target=wait)
                waiter.start()
                time.sleep(0.2)  # it waits now
                killed = time.monotonic()
                child.kill()
                waiter.join(35)
            finally:
                child.kill()
                child.wait()
            error = result.get("error")
            assert isinstance(error, PeerGoneError), result
            assert error.state == "dead" and error.side == "writer" and error.pid == child.pid
            assert "died without closing" in str(error)
            print(f"\nwriter SIGKILLed: the reader's wait raised after "
                  f"{(result['at'] - killed) * 1000:.1f} ms")
            assert ring.stats.writer.state == "dead"

    def test_a_writer_that_closes_is_closed_and_its_frames_are_read_first(self):
        with Ring(1024, 2) as ring:
            child = _child(WRITER_CHILD.format(fd=ring.fd, close=True), ring.fd)
            try:
                assert _line(child) == "wrote" and _line(child) == "closed"
                assert ring.stats.writer.state == "closed"
                assert ring.wait_readable(64, timeout=5)  # there: no error
                assert ring.read(100).shape == (64, 2)
                with pytest.raises(PeerGoneError, match="closed the ring") as caught:
                    ring.read(1)
                assert caught.value.state == "closed"
                with pytest.raises(PeerGoneError):
                    ring.wait_readable(1, timeout=5)
            finally:
                child.kill()
                child.wait()

    def test_a_killed_reader_makes_the_blocked_writer_raise(self):
        with Ring(1024, 2) as ring:
            child = _child(READER_CHILD.format(fd=ring.fd), ring.fd)
            try:
                assert _line(child) == "reading"
                assert ring.write(np.zeros((1024, 2), np.float32)) == 1024  # full now
                result: dict[str, object] = {}

                def write() -> None:
                    try:
                        ring.write(np.zeros((256, 2), np.float32), timeout=None)
                    except PeerGoneError as e:
                        result["error"] = e
                        result["at"] = time.monotonic()

                writer = threading.Thread(target=write)
                writer.start()
                time.sleep(0.2)
                killed = time.monotonic()
                child.kill()
                writer.join(30)
                assert not writer.is_alive(), "the write blocked on with its reader dead"
            finally:
                child.kill()
                child.wait()
            error = result.get("error")
            assert isinstance(error, PeerGoneError) and error.state == "dead", result
            assert "nothing written now would be read" in str(error)
            print(f"\nreader SIGKILLed: the blocked write raised after "
                  f"{(result['at'] - killed) * 1000:.1f} ms")
            with pytest.raises(PeerGoneError):  # and every later write
                ring.write(np.zeros((1, 2), np.float32))

    def test_a_reader_of_this_process_that_closes_ends_a_waiting_write(self):
        # In one process the goodbye wakes the futex and the write returns what it queued
        # (the ring stays this process's: no error); nothing waits for the timeout.
        with Ring(1024, 2) as ring:
            reader = Ring.attach(ring.fd)
            reader.read(0)
            ring.write(np.zeros((1024, 2), np.float32))
            threading.Timer(0.2, reader.close).start()
            started = time.monotonic()
            assert ring.write(np.zeros((1, 2), np.float32), timeout=30) == 0
            print(f"\nthe write returned {(time.monotonic() - started) * 1000:.0f} ms after "
                  f"it began (the reader closed at 200 ms)")
            assert ring.peer.state == "closed"

    def test_a_forked_copy_closing_says_no_goodbye(self):
        with Ring(1024, 2) as ring, Ring.attach(ring.fd) as writer:
            writer.write(np.zeros((1, 2), np.float32))
            ring.read(1)
            pid = os.fork()
            if pid == 0:  # the child closes its copies of both handles, then leaves
                writer.close()
                ring.close()
                os._exit(0)
            os.waitpid(pid, 0)
            assert ring.peer.state == "alive" and writer.peer.state == "alive"

    def test_write_timeouts_and_bad_timeouts(self):
        with Ring(1024, 2) as ring:
            ring.write(np.zeros((1024, 2), np.float32))
            assert ring.write(np.zeros((8, 2), np.float32), timeout=0.05) == 0  # no reader
            for bad in (-1, float("nan"), "1", True):
                with pytest.raises(ValueError, match="timeout"):
                    ring.write(np.zeros((8, 2), np.float32), timeout=bad)


# ---- producer processes ------------------------------------------------------------------------


def _render_until_done(engine: streamcore.Engine, voice, limit_s: float = 60.0) -> np.ndarray:
    """Render periods on the manual clock until ``voice`` is done (waiting for the producer
    process between periods), and return everything rendered."""
    out = []
    deadline = time.monotonic() + limit_s
    while not voice.done and time.monotonic() < deadline:
        out.append(engine.render(1))
        if not voice.ring.closed and voice.ring.readable == 0:
            time.sleep(0.002)  # the producer is writing, or starting up
    assert voice.done, f"the voice did not end within {limit_s} s"
    return np.concatenate(out)


def _first_sound(out: np.ndarray) -> int:
    nonzero = np.flatnonzero(np.abs(out).sum(axis=1))
    assert nonzero.size, "nothing arrived"
    return int(nonzero[0])


class TestProducerProcess:
    def test_what_it_writes_arrives_bit_exact_and_its_return_finishes_the_voice(self):
        total = 48000 + 77
        with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
            voice = engine.stream(channels=2, frames=4096, producer=producers.finite,
                                  args=(total,))
            out = _render_until_done(engine, voice)
        start = _first_sound(out)
        assert np.array_equal(out[start:start + total], pattern(0, total, 2))
        assert not out[start + total:].any()
        assert voice.end_reason == "finished" and voice.frames_played == total

    def test_a_killed_producer_ends_the_voice_with_an_event(self):
        with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="null") as engine:
            events: list[streamcore.watchdog.Event] = []
            arrived = threading.Event()

            def on_event(event) -> None:
                events.append(event)
                arrived.set()

            engine.subscribe(on_event)
            voice = engine.stream(channels=2, producer=producers.forever)
            deadline = time.monotonic() + 30
            while voice.ring.stats.writer.state != "alive" and time.monotonic() < deadline:
                time.sleep(0.01)
            pid = voice.ring.stats.writer.pid
            assert pid and pid != os.getpid()
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            assert voice.wait(30), "the voice played on after its producer died"
            ended = time.monotonic()
            assert arrived.wait(30)
            noticed = time.monotonic()
        assert voice.end_reason == "producer_died"
        died = [e for e in events if e.reason == "producer_died"]
        assert len(died) == 1 and f"pid {pid}" in died[0].detail
        assert "killed by signal 9" in died[0].detail
        print(f"\nproducer SIGKILLed: the voice ended after {(ended - killed) * 1000:.1f} ms, "
              f"the event reached the subscriber after {(noticed - killed) * 1000:.1f} ms")

    def test_a_producer_that_raises_ends_the_voice_and_says_how(self):
        with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="null") as engine:
            voice = engine.stream(channels=2, producer=producers.fails, args=(1000,))
            assert voice.wait(60)
            events = [e for e in engine.events() if e.reason == "producer_died"]
        assert voice.end_reason == "producer_died"
        assert len(events) == 1 and "exited with status 1" in events[0].detail

    @pytest.mark.parametrize("how", ["stop", "close"])
    def test_the_engine_ending_the_voice_ends_the_producer(self, how, tmp_path):
        report = str(tmp_path / "report.json")
        engine = streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="null")
        engine.start()
        voice = engine.stream(channels=2, producer=producers.forever, args=(report,))
        deadline = time.monotonic() + 30
        while not os.path.exists(report + ".pid") and time.monotonic() < deadline:
            time.sleep(0.01)
        pid = int(Path(report + ".pid").read_text())
        if how == "stop":
            voice.stop(fade=0)
            assert voice.wait(10) and voice.end_reason == "stopped"
        engine.close()  # joins the producer (it ends on its own: its write raised)
        said = json.loads(Path(report).read_text())
        assert said["state"] == "closed" and said["side"] == "reader"
        with pytest.raises(ProcessLookupError):  # ended and reaped
            os.kill(pid, 0)

    def test_the_engine_process_killed_makes_the_producer_raise(self, tmp_path):
        report = str(tmp_path / "report.json")
        owner = _child(f"""
            import time, streamcore
            from tests.helpers import producers
            if __name__ == "__main__":
                engine = streamcore.Engine(sink="null")
                engine.start()
                voice = engine.stream(channels=2, producer=producers.forever,
                                      args=({report!r},))
                print("playing", flush=True)
                time.sleep(120)
        """)
        try:
            assert _line(owner) == "playing"
            deadline = time.monotonic() + 30
            while not os.path.exists(report + ".pid") and time.monotonic() < deadline:
                time.sleep(0.01)
            producer_pid = int(Path(report + ".pid").read_text())
            time.sleep(0.3)  # it writes, blocked on a full ring between the mixer's reads
            killed = time.monotonic()
            owner.kill()
            owner.wait()
            deadline = time.monotonic() + 30
            while not os.path.exists(report) and time.monotonic() < deadline:
                time.sleep(0.005)
            said = json.loads(Path(report).read_text())
        finally:
            owner.kill()
            owner.wait()
        assert said["state"] == "dead" and said["side"] == "reader"
        assert said["pid"] == owner.pid and "died without closing" in said["message"]
        print(f"\nengine's process SIGKILLed: the producer's write raised after "
              f"{(said['monotonic'] - killed) * 1000:.1f} ms")
        deadline = time.monotonic() + 10  # and the producer process ended
        while time.monotonic() < deadline:
            try:
                os.kill(producer_pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)
        else:
            os.kill(producer_pid, signal.SIGKILL)
            pytest.fail("the producer outlived its engine's process")

    def test_bad_producers(self):
        with streamcore.Engine(sink="manual") as engine:
            with pytest.raises(TypeError, match="producer must be a callable"):
                engine.stream(producer=42)
            with (Ring(1024, 2) as ring,
                  pytest.raises(ValueError, match="a ring or a producer, not both")):
                engine.stream(ring=ring, producer=producers.finite)
            with pytest.raises(ValueError, match="cannot be sent to the producer process"):
                engine.stream(producer=lambda stream: None)
            with pytest.raises(ValueError, match="its arguments cannot be sent"):
                engine.stream(producer=producers.finite, args=(threading.Lock(),))
            assert engine.voices == []  # nothing left playing

    def test_a_ring_passed_in_whose_writer_process_dies(self):
        with (Ring(8192, 2) as ring,
              streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="null") as engine):
            voice = engine.stream(ring=ring)  # its writer comes later, from another process
            child = _child(WRITER_CHILD.format(fd=ring.fd, close=False), ring.fd)
            try:
                assert _line(child) == "wrote"
                time.sleep(0.3)  # the watch has seen it claim the ring
                child.kill()
                assert voice.wait(30)
            finally:
                child.kill()
                child.wait()
            assert voice.end_reason == "producer_died"
            assert any(e.reason == "producer_died" and f"pid {child.pid}" in e.detail
                       for e in engine.events())


# ---- starvation: a CPU-heavy main thread ---------------------------------------------------------

SECONDS = 10.0


def _busy_main_thread(until: float) -> int:
    """What an application's main thread may do: pure Python work, holding the GIL."""
    n = 0
    while time.monotonic() < until:
        n += sum(i * i for i in range(2000)) & 1
    return n


def _thread_producer(voice, stop: threading.Event) -> None:
    """The README's thread producer: compute a chunk, write it (blocking)."""
    phase = 0
    while not stop.is_set():
        t = (phase + np.arange(512)) / RATE
        block = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        voice.write(np.repeat(block[:, None], 2, axis=1), timeout=0.5)
        phase += 512


class TestStarvation:
    def test_a_process_producer_does_not_starve_under_a_busy_main_thread(self):
        with Load(enabled=True), streamcore.Engine(samplerate=RATE, sink="null") as engine:
            voice = engine.stream(channels=2, frames=RATE // 2, producer=producers.tone,
                                  args=(SECONDS + 30,))
            deadline = time.monotonic() + 30
            while voice.ring.stats.frames_written < RATE // 4 and time.monotonic() < deadline:
                time.sleep(0.01)  # the process started and got ahead
            before = voice.stats()["underruns"]
            _busy_main_thread(time.monotonic() + SECONDS)
            after = voice.stats()
            voice.stop(fade=0)
        underruns = after["underruns"] - before
        print(f"\nprocess producer, {SECONDS:.0f} s under load with a busy main thread: "
              f"{underruns} underruns, {after['frames_played']} frames played")
        assert underruns == 0

    def test_the_readme_thread_producer_is_measured(self):
        with Load(enabled=True), streamcore.Engine(samplerate=RATE, sink="null") as engine:
            voice = engine.stream(channels=2)
            stop = threading.Event()
            producer = threading.Thread(target=_thread_producer, args=(voice, stop))
            producer.start()
            time.sleep(0.5)
            before = voice.stats()
            _busy_main_thread(time.monotonic() + SECONDS / 2)
            after = voice.stats()
            stop.set()
            producer.join()
            voice.stop(fade=0)
        underruns = after["underruns"] - before["underruns"]
        silent = after["underrun_frames"] - before["underrun_frames"]
        print(f"\nthread producer, {SECONDS / 2:.0f} s under load with a busy main thread: "
              f"{underruns} underruns, {silent / RATE:.2f} s of silence (measured, not "
              f"asserted: the GIL decides)")
