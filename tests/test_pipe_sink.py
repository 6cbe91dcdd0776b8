"""PipeSink: the engine's output through real pipes to real reader processes."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from streamcore import Engine
from streamcore.errors import SinkError
from streamcore.sinks.pipe import PipeSink
from streamcore.telemetry import TRACE_PIPE
from streamcore.wav import header as wav_header
from tests.services.common import require_program, wait_until

HELPERS = pathlib.Path(__file__).parent / "helpers"
CHANNELS = 2


def float_pattern(frames: int) -> np.ndarray:
    """(frames, 2) float32 counting pattern, word k = k % (2**24 - 1) + 1 (see the reader)."""
    k = np.arange(frames * CHANNELS, dtype=np.int64)
    return (k % (2**24 - 1) + 1).astype(np.float32).reshape(frames, CHANNELS)


def reader(*args: str, stdin) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], stdin=stdin, stdout=subprocess.PIPE,
                            text=True)


def play_through(sink: PipeSink, frames: int, proc: subprocess.Popen, timeout: float = 240):
    """Play the pattern once through ``sink`` while ``proc`` reads; stop when it is done.

    The voice is queued at frame 0 before the engine starts, so the stream begins with it."""
    pattern = float_pattern(frames)
    engine = Engine(blocksize=256, channels=CHANNELS, sink=sink, realtime=False)
    try:
        engine.play(pattern, at=0)
        engine.start()
        out, _ = proc.communicate(timeout=timeout)
        stats = engine.stats()
    finally:
        closes_with(engine, "EPIPE")  # the reader stops at its count: that ends the stream
    return json.loads(out) if out.strip().startswith("{") else out.strip(), stats


def iter_read(fd: int):
    """Everything from ``fd`` until end of input, in chunks."""
    while chunk := os.read(fd, 1 << 20):
        yield chunk


def closes_with(engine: Engine, *reasons: str) -> None:
    """Close ``engine`` where the stream ends because of its reader: close() raises that
    failure once (issue 14), with one of ``reasons`` in it, or nothing if it came too late."""
    try:
        engine.close()
    except SinkError as e:
        assert any(reason in str(e) for reason in reasons), e


class TestIntegrity:
    """Every sample arrives, in order, whatever the reader does: the pages are never reused
    while the pipe holds them."""

    @pytest.mark.parametrize("zero_copy", [True, False], ids=["vmsplice", "write"])
    def test_64_mib_to_a_slow_read_reader(self, zero_copy):
        """64 MiB of a counting pattern to a reader that pauses at random between reads."""
        frames = 64 * 1024 * 1024 // (4 * CHANNELS)
        r, w = os.pipe()
        proc = reader(str(HELPERS / "pattern_reader.py"), "--float-words", str(frames * CHANNELS),
                      "--max-sleep", "0.001", stdin=r)
        os.close(r)
        try:
            sink = PipeSink(w, format="f32le", pipe_size=64 * 1024, zero_copy=zero_copy)
            seen, stats = play_through(sink, frames, proc)
        finally:
            os.close(w)
        assert seen["words"] == frames * CHANNELS
        assert seen["mismatches"] == 0
        assert stats.sink["zero_copy"] is zero_copy
        if zero_copy:
            assert stats.sink["pipe_bytes"] == 64 * 1024
            assert stats.sink["halves"] == stats.sink["bytes"] // (64 * 1024) > 0

    def test_64_mib_to_a_splice_to_file_reader(self, tmp_path):
        """The same stream moved on by a reader that splices the pipe into a file."""
        frames = 64 * 1024 * 1024 // (4 * CHANNELS)
        nbytes = frames * CHANNELS * 4
        out = tmp_path / "spliced.f32"
        r, w = os.pipe()
        proc = reader(str(HELPERS / "splice_reader.py"), str(out), "--bytes", str(nbytes),
                      stdin=r)
        os.close(r)
        try:
            sink = PipeSink(w, format="f32le", pipe_size=64 * 1024)
            moved, _ = play_through(sink, frames, proc)
        finally:
            os.close(w)
        assert int(moved) == nbytes
        words = np.fromfile(out, dtype="<f4")
        assert np.array_equal(words, float_pattern(frames).reshape(-1))


class TestFormats:
    """The stream is what the format says: sox reads the WAV, s16le decodes exactly."""

    def test_sox_accepts_the_wav_stream(self):
        sox = require_program("sox", "sox")
        proc = subprocess.Popen([sox, "-t", "wav", "-", "-n", "stat"], stdin=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        tone = (0.5 * np.sin(np.arange(48000) * 2 * np.pi * 440 / 48000)).astype(np.float32)
        sink = PipeSink(proc.stdin, format="wav", dtype="int16")
        with Engine(blocksize=256, channels=CHANNELS, sink=sink, realtime=False) as engine:
            assert engine.play(np.column_stack([tone, tone])).wait(timeout=30)
        proc.stdin.close()  # end of the stream: sox prints its figures and exits
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0, err
        maximum = float(next(line.split(":")[1] for line in err.splitlines()
                             if line.startswith("Maximum amplitude")))
        assert maximum == pytest.approx(0.5, abs=0.01)

    def test_s16le_decodes_to_the_expected_samples(self, tmp_path):
        """Into a regular file (internal pipe + splice): int16 samples equal the engine's
        conversion, x * 32768 rounded (native/mixer.c), within one step."""
        values = np.linspace(-0.9, 0.9, 4096, dtype=np.float32)
        path = tmp_path / "out.s16"
        with open(path, "wb") as f:
            sink = PipeSink(f, format="s16le")
            with Engine(blocksize=256, channels=CHANNELS, sink=sink, realtime=False) as engine:
                assert engine.play(np.column_stack([values, -values])).wait(timeout=30)
                assert sink.stats()["target"] == "file" and sink.stats()["zero_copy"]
        data = np.fromfile(path, dtype="<i2").reshape(-1, CHANNELS)
        start = int(np.flatnonzero(data[:, 0])[0])
        got = data[start:start + values.size]
        expected = np.column_stack([values, -values]) * 32768
        assert np.max(np.abs(got - expected)) <= 1.0

    def test_wav_header_fields(self):
        header = wav_header(44100, 2, "float32")
        assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt " and len(header) == 44
        assert int.from_bytes(header[20:22], "little") == 3  # IEEE float


class TestReaderGone:
    """The reader going away stops the sink cleanly; the process lives and is told."""

    def test_killed_reader(self):
        r, w = os.pipe()
        proc = reader(str(HELPERS / "pattern_reader.py"), "--max-sleep", "0", stdin=r)
        os.close(r)
        try:
            sink = PipeSink(w, format="f32le")
            with pytest.raises(SinkError, match="EPIPE"), Engine(
                    blocksize=256, channels=CHANNELS, sink=sink, realtime=False) as engine:
                engine.play(float_pattern(48000), loop=True)
                time.sleep(0.3)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                assert wait_until(lambda: engine.stats().sink["error"] is not None, 10)
                assert "EPIPE" in engine.stats().sink["error"]
                # The engine stopped itself: nothing waits forever for the voice.
                assert wait_until(lambda: not engine.running, 10)
        finally:
            os.close(w)

    @pytest.mark.parametrize("realtime", [False, True])
    def test_reader_gone_before_the_first_byte(self, realtime):
        """A reader that exits at once: play().wait() raises instead of hanging.  With
        realtime the mixer has often ended (EPIPE on its first vmsplice) before start()
        promotes it: start() must not fail for a thread that is already gone."""
        r, w = os.pipe()
        os.close(r)
        try:
            sink = PipeSink(w, format="wav")
            with pytest.raises(SinkError, match="EPIPE"), Engine(
                    blocksize=256, channels=CHANNELS, sink=sink, realtime=realtime) as engine:
                voice = engine.play(float_pattern(48000))
                with pytest.raises(SinkError, match="EPIPE"):
                    voice.wait(timeout=10)  # not heard to its end: the failure says so
                assert voice.end_reason == "failed" and "EPIPE" in sink.error
                assert "EPIPE" in voice.error and "EPIPE" in engine.failure
                assert not engine.running
                with pytest.raises(SinkError, match="EPIPE"):
                    engine.play(float_pattern(480))  # would never be handed back
                assert [e.reason for e in engine.events()] == ["sink_failed"]
        finally:
            os.close(w)

    def test_stalled_reader_does_not_hang_stop(self):
        """A reader that never reads: the sink waits (counted), and stop() still returns."""
        r, w = os.pipe()
        try:
            sink = PipeSink(w, format="f32le")
            engine = Engine(blocksize=256, channels=CHANNELS, sink=sink, realtime=False)
            engine.start()
            engine.play(float_pattern(48000), loop=True)
            assert wait_until(lambda: engine.stats().sink["reader_waits"] > 0, 10)
            t0 = time.monotonic()
            with pytest.raises(SinkError, match="timed out"):  # the final flush gave up
                engine.close()
            assert time.monotonic() - t0 < 10
        finally:
            os.close(r)
            os.close(w)


class TestArguments:
    """Bad arguments are clear errors."""

    def test_bad_format(self):
        with pytest.raises(ValueError, match="format"):
            PipeSink(1, format="mp3")

    def test_format_and_dtype_disagree(self):
        with pytest.raises(ValueError, match="int16"):
            PipeSink(1, format="s16le", dtype="float32")

    def test_closed_descriptor(self):
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        with pytest.raises(ValueError, match="not open"):
            PipeSink(w)

    def test_not_a_target(self):
        with pytest.raises(TypeError):
            PipeSink(3.5)  # type: ignore[arg-type]

    def test_the_read_end_of_a_pipe_is_refused(self):
        """Its flags say read-only (the path /proc/self/fd/N would say nothing useful)."""
        r, w = os.pipe()
        try:
            with pytest.raises(ValueError, match="reading only"):
                PipeSink(r)
            with pytest.raises(ValueError, match=r"tee descriptor \d+ is open for reading only"):
                PipeSink(w, tee=r)
        finally:
            os.close(r)
            os.close(w)

    def test_a_file_opened_for_reading_is_refused(self, tmp_path):
        path = tmp_path / "x.wav"
        path.write_bytes(b"")
        with open(path, "rb") as f, pytest.raises(ValueError, match="reading only"):
            PipeSink(f)


class TestWavFile:
    """Into a regular file the WAV header ends up with the stream's real sizes (a pipe keeps
    the streaming 0xFFFFFFFF: its readers play to end of input)."""

    @pytest.mark.parametrize("zero_copy", [True, False])
    def test_the_header_sizes_are_exact_after_close(self, tmp_path, zero_copy):
        import wave

        path = tmp_path / "out.wav"
        data = float_pattern(24000)
        with open(path, "wb") as f:
            sink = PipeSink(f, format="wav", dtype="float32", zero_copy=zero_copy)
            with Engine(blocksize=256, channels=CHANNELS, sink=sink, realtime=False) as e:
                assert e.play(data).wait(30)
            written = sink.stats()["bytes"]
        assert path.stat().st_size == written
        raw = path.read_bytes()
        riff, data_bytes = struct.unpack("<I", raw[4:8])[0], struct.unpack("<I", raw[40:44])[0]
        assert (riff, data_bytes) == (written - 8, written - 44)
        frames = data_bytes // (4 * CHANNELS)
        assert frames >= 24000  # the voice, and the silence rendered around it (issue 14)
        soxi = subprocess.run(["soxi", "-s", str(path)], capture_output=True, text=True)
        assert soxi.returncode == 0, soxi.stderr
        assert int(soxi.stdout) == frames
        got = np.frombuffer(raw[44:], np.float32).reshape(-1, CHANNELS)
        assert got.shape[0] == frames and np.abs(got).max() > 0  # the voice is in there
        # float WAV is not PCM: the wave module refuses it (it reads int16 below), not misreads
        with pytest.raises(wave.Error), wave.open(str(path)):
            pass

    def test_int16_header_read_by_the_wave_module(self, tmp_path):
        import wave

        path = tmp_path / "out.wav"
        with open(path, "wb") as f:
            sink = PipeSink(f, format="wav", dtype="int16")
            with Engine(blocksize=256, channels=CHANNELS, sink=sink, realtime=False) as e:
                assert e.play(float_pattern(4800) * 0.5).wait(30)
            written = sink.stats()["bytes"]
        with wave.open(str(path)) as w:
            assert w.getnframes() == (written - 44) // (2 * CHANNELS)  # not 1 073 741 823

    def test_a_pipe_keeps_the_streaming_header(self):
        r, w = os.pipe()
        received = bytearray()
        def read_all() -> None:
            for chunk in iter_read(r):
                received.extend(chunk)

        drain = threading.Thread(target=read_all, daemon=True)
        drain.start()
        try:
            sink = PipeSink(w, format="wav")
            with Engine(blocksize=256, channels=CHANNELS, sink=sink, realtime=False) as e:
                assert e.play(float_pattern(4800)).wait(30)
        finally:
            os.close(w)
            drain.join(30)
            os.close(r)
        assert received[:4] == b"RIFF" and len(received) > 44
        assert received[4:8] == b"\xff\xff\xff\xff" and received[40:44] == b"\xff\xff\xff\xff"


class TestFullTarget:
    """A target that refuses the bytes (/dev/full: ENOSPC): wait() and close() raise."""

    def test_dev_full_raises_from_wait_and_close(self):
        with open("/dev/full", "wb") as f:
            engine = Engine(blocksize=256, channels=CHANNELS, sink=PipeSink(f, format="s16le"),
                            realtime=False)
            engine.start()
            voice = engine.play(float_pattern(48000))
            with pytest.raises(SinkError, match="No space left"):
                voice.wait(10)
            assert voice.end_reason == "failed"
            with pytest.raises(SinkError, match="No space left"):
                engine.close()
            assert engine.closed


class TestTee:
    """A second consumer gets the same bytes, by tee() when both are pipes, never corrupted."""

    PACED = """
import os, sys, time
rate = 48000 * 2 * 4  # f32 stereo: bytes per second of audio
t0, got = time.monotonic(), 0
while True:
    b = os.read(0, 4096)
    if not b:
        break
    got += len(b)
    ahead = got / rate - (time.monotonic() - t0)
    if ahead > 0:
        time.sleep(ahead)
print(got)
"""

    @pytest.mark.parametrize("zero_copy", [True, False], ids=["tee", "copy"])
    def test_close_is_bounded_with_readers_at_the_sample_rate(self, zero_copy):
        """Two readers that keep up at the sample rate: close() stops at once (it waited for
        them to fall behind: 58 s, once 284 s) and both got every byte the sink counted."""
        r, w = os.pipe()
        tr, tw = os.pipe()
        readers = [subprocess.Popen([sys.executable, "-c", self.PACED], stdin=fd,
                                    stdout=subprocess.PIPE, text=True) for fd in (r, tr)]
        os.close(r)
        os.close(tr)
        try:
            sink = PipeSink(w, format="f32le", tee=tw, zero_copy=zero_copy)
            engine = Engine(blocksize=256, channels=CHANNELS, sink=sink, realtime=False)
            engine.start()
            engine.play(float_pattern(4800), loop=True)
            time.sleep(1.0)
            t0 = time.monotonic()
            engine.close()
            took = time.monotonic() - t0
        finally:
            os.close(w)
            os.close(tw)
        got = [int(p.communicate(timeout=60)[0]) for p in readers]
        assert took < 10, f"close() took {took:.1f} s"
        assert got == [sink.stats()["bytes"]] * 2

    @pytest.mark.parametrize("tee_kind", ["pipe", "file"])
    def test_both_consumers_get_every_word(self, tee_kind, tmp_path):
        """16 MiB to a slow read() reader and, at the same time, to a tee: a second slow reader
        (by tee(), zero copy) or a file (a copy for that branch).  Both see the pattern whole."""
        frames = 16 * 1024 * 1024 // (4 * CHANNELS)
        words = frames * CHANNELS
        r, w = os.pipe()
        main = reader(str(HELPERS / "pattern_reader.py"), "--float-words", str(words),
                      "--max-sleep", "0.001", stdin=r)
        os.close(r)
        tee_file = None
        if tee_kind == "pipe":
            tr, tw = os.pipe()
            second = reader(str(HELPERS / "pattern_reader.py"), "--float-words", str(words),
                            "--max-sleep", "0.002", "--seed", "7", stdin=tr)
            os.close(tr)
            tee_target = tw
        else:
            tee_file = open(tmp_path / "tee.f32", "wb")  # noqa: SIM115 (closed below)
            tee_target = tee_file.fileno()
        try:
            sink = PipeSink(w, format="f32le", pipe_size=64 * 1024, tee=tee_target,
                            zero_copy=True)
            engine = Engine(blocksize=256, channels=CHANNELS, sink=sink, realtime=False)
            try:
                engine.start()
                engine.play(float_pattern(frames))
                seen = json.loads(main.communicate(timeout=240)[0])
                if tee_kind == "pipe":
                    seen_tee = json.loads(second.communicate(timeout=240)[0])
                else:
                    assert wait_until(lambda: engine.stats().sink["bytes"] >= 4 * words, 60)
                stats = engine.stats().sink
            finally:
                closes_with(engine, "EPIPE")  # the readers stop at their counts
        finally:
            os.close(w)
            if tee_kind == "pipe":
                os.close(tee_target)
        assert seen == {"words": words, "mismatches": 0, "skipped": seen["skipped"]}
        assert stats["zero_copy"] and stats["tee_copy"] is (tee_kind != "pipe")
        if tee_kind == "pipe":
            assert seen_tee == {"words": words, "mismatches": 0, "skipped": seen_tee["skipped"]}
        else:
            tee_file.close()
            data = np.fromfile(tmp_path / "tee.f32", dtype="<f4")
            start = int(np.flatnonzero(data)[0])
            assert np.array_equal(data[start:start + words], float_pattern(frames).reshape(-1))


class TestWriter:
    """Straight into a pipe the mixer writes it itself; everything else has a writer thread."""

    def test_who_writes(self, tmp_path):
        r, w = os.pipe()
        tr, tw = os.pipe()
        try:
            with open(tmp_path / "out.f32", "wb") as f:
                cases = {
                    "mixer": [PipeSink(w, format="f32le"), PipeSink(w, format="f32le",
                                                                    zero_copy=True)],
                    "thread": [PipeSink(f, format="f32le"),
                               PipeSink(w, format="f32le", tee=tw)],
                }
                for expected, sinks in cases.items():
                    for sink in sinks if isinstance(sinks, list) else [sinks]:
                        engine = Engine(blocksize=256, channels=CHANNELS, sink=sink,
                                        realtime=False)
                        try:
                            engine.play(float_pattern(48000), loop=True)
                            engine.start()
                            assert sink.stats()["writer"] == expected, sink.stats()
                        finally:
                            # nobody reads these pipes: the final flush times out
                            closes_with(engine, "timed out")
                        for fd in (r, tr):  # empty the pipes for the next case
                            os.set_blocking(fd, False)
                            try:
                                while os.read(fd, 1 << 20):
                                    pass
                            except BlockingIOError:
                                pass
        finally:
            for fd in (r, w, tr, tw):
                os.close(fd)

    def test_the_mixer_writing_a_pipe_faults_no_page_and_sleeps_only_in_its_wait(self):
        """A realtime mixer writing a pipe to a real reader process for 3 s: no page fault (its
        sink state is mlocked like the engine), and at most one voluntary switch per cycle."""
        from tests.helpers.threads import thread_counters

        r, w = os.pipe()
        proc = reader(str(HELPERS / "pattern_reader.py"), "--max-sleep", "0.001", stdin=r)
        os.close(r)
        try:
            sink = PipeSink(w, format="f32le", pipe_size=64 * 1024)
            with Engine(blocksize=256, channels=CHANNELS, sink=sink) as engine:
                engine.play(float_pattern(48000), loop=True)
                engine.start()
                time.sleep(0.5)
                before, cycles_before = thread_counters(engine.mixer_tid), engine.stats().cycles
                time.sleep(3.0)
                # one cycle's copy: read field by field, a cycle may end between two counters
                after, stats = thread_counters(engine.mixer_tid), engine.stats(consistent=True)
                trace = engine.trace()
                assert stats.sink["writer"] == "mixer" and stats.sink["error"] is None
        finally:
            proc.kill()
            proc.wait()
            os.close(w)
        cycles = stats.cycles - cycles_before
        assert cycles > 100  # it really ran
        assert after["minflt"] - before["minflt"] == 0
        assert after["majflt"] - before["majflt"] == 0
        switches = after["voluntary_ctxt_switches"] - before["voluntary_ctxt_switches"]
        assert switches <= cycles + 1
        # Its cycles are marked as the pipe's, and claim no wake-up latency.
        assert len(trace) and np.all(trace["flags"] & TRACE_PIPE) and not trace["late_ns"].any()
        assert stats.wake_latency.count == 0 and stats.mix_time.count == stats.cycles

    def test_a_fast_reader_is_no_overrun(self):
        """A reader as fast as `cat` takes a whole half (here 2048 periods of 64 frames) per
        cycle: rendering them is far faster than playing them, so the realtime mixer is not
        demoted for its long cycles (budget and hard limit are per period rendered)."""
        r, w = os.pipe()
        proc = subprocess.Popen(["cat"], stdin=r, stdout=subprocess.DEVNULL)
        os.close(r)
        noise = (np.random.default_rng(3).standard_normal((48000, 2)) * 0.01).astype(np.float32)
        try:
            sink = PipeSink(w, format="f32le", pipe_size=1 << 20, zero_copy=True)
            with Engine(blocksize=64, channels=CHANNELS, sink=sink) as engine:
                for _ in range(50):
                    engine.play(noise, loop=True)
                time.sleep(2.0)
                stats, events = engine.stats(), engine.events()
                if not (engine.grant and engine.grant.realtime):
                    if os.environ.get("CI") == "true":
                        pytest.fail(f"the mixer did not get realtime: {engine.grant}")
                    pytest.skip(f"the watchdog's cycle rules need a realtime mixer: {engine.grant}")
        finally:
            proc.kill()
            proc.wait()
            os.close(w)
        assert stats.sink["writer"] == "mixer" and stats.sink["error"] is None
        assert stats.periods / stats.cycles > 100  # the cycles really were long
        assert events == [] and stats.demotions == 0 and stats.overruns == 0

    @pytest.mark.parametrize("target, zero_copy", [("pipe", True), ("pipe", False),
                                                   ("file", True)],
                             ids=["mixer", "thread-copy", "thread-relay"])
    def test_a_restarted_engine_goes_on_with_the_stream(self, target, zero_copy, tmp_path):
        """stop() then start(): the WAV header is not sent again, and the target gets every
        byte the sink counted, across the restart (each writer)."""
        out = tmp_path / "stream.wav"
        proc = None
        with open(out, "wb") as f:
            if target == "pipe":
                r, w = os.pipe()
                proc = subprocess.Popen(["cat"], stdin=r, stdout=f)
                os.close(r)
            else:
                w = os.dup(f.fileno())
        try:
            sink = PipeSink(w, format="wav", pipe_size=64 * 1024, zero_copy=zero_copy)
            engine = Engine(blocksize=256, channels=CHANNELS, sink=sink, realtime=False)
            try:
                engine.play(float_pattern(48000), loop=True)  # a reader sink gets only audio
                engine.start()
                assert wait_until(lambda: engine.stats().sink["bytes"] > 1 << 20, 30)
                engine.stop()
                first = sink.stats()["bytes"]
                assert not sink.stats()["running"]
                engine.play(float_pattern(48000), loop=True)  # stop() handed the voice back
                engine.start()
                assert wait_until(lambda: engine.stats().sink["bytes"] > first + (1 << 20), 30)
            finally:
                engine.close()
            stats = sink.stats()
        finally:
            os.close(w)
            if proc is not None:
                proc.wait(timeout=60)
        assert stats["writer"] == ("mixer" if target == "pipe" else "thread")
        data = out.read_bytes()
        assert len(data) == stats["bytes"]
        assert data.startswith(b"RIFF") and data.count(b"RIFF") == 1
