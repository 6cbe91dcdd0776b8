"""Capture (issue 16): Engine(input_channels=N) on a real JACK server (dummy backend).

A second JACK client (tests/helpers/feeder.py) plays a known float32 ramp into the engine's
input ports; every frame the engine hands on can be checked bit-exact and placed: the
device sink's per-callback log (input frame at each callback) matched with the feeder's
cycle log gives the input frame each feeder frame becomes, so a recording's position is
predicted, not just found.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jack
import numpy as np
import pytest
import soundfile as sf

import streamcore
from streamcore._native import ffi, lib
from streamcore.capture import TAP_FRAMES
from streamcore.errors import DeviceSettingsError, InputLateError, LoopbackNotFoundError
from streamcore.profiling import chrome_trace
from streamcore.sinks import portaudio
from streamcore.sinks.device import DeviceSink, resolve_device
from tests.helpers.feeder import Feeder, loop_back, position, ramp
from tests.services.common import require_program, wait_until
from tests.services.jack import settle

ROOT = Path(__file__).resolve().parent.parent


class Fed:
    """A started duplex engine on the JACK device whose inputs the feeder plays into."""

    def __init__(self, engine: streamcore.Engine, feeder: Feeder, period: int) -> None:
        self.engine, self.feeder, self.period = engine, feeder, period

    def offset(self) -> int:
        """input frame = feeder k + offset, taken over a quiet half second: a server xrun
        (the dummy server has some, most just after it started) moves the device's input
        clock against the server's."""
        seen = []
        for _ in range(10):
            since = time.monotonic_ns()
            time.sleep(0.5)
            offsets = self.feeder.offset(self.engine.sink.timestamps(), self.period, since)
            seen.append(offsets)
            if len(offsets) == 1:
                return offsets.pop()
        pytest.fail(f"the feed's position is not one offset: {seen}")

    def xruns(self) -> int:
        """The server's xruns so far (JACK's notifications) plus device-flagged ones."""
        sink = self.engine.stats().sink
        return int(sink.get("server_xruns") or 0) + int(sink.get("xruns") or 0)

    def clean(self, body: Callable[[int], object], tries: int = 3) -> object:
        """``body(offset)``; an assertion that fails in a run the server xran in (a cycle
        of the feed missed or moved: this VM's noise, not the engine's doing) is tried
        again; one that fails in a run without an xrun fails the test."""
        seen = []
        for _ in range(tries):
            offset, before = self.offset(), self.xruns()
            try:
                return body(offset)
            except AssertionError as e:
                xruns = self.xruns() - before
                # The feed's cycles can move against the device's without an xrun JACK
                # counts (the feeder's own callback late on a loaded VM): then the offset
                # the body was given is no longer the feed's.
                later = self.offset() if xruns == 0 else offset
                if xruns == 0 and later == offset:
                    raise
                why = f"{xruns} xruns" if xruns else f"the feed's offset {offset} -> {later}"
                seen.append(f"{why}: {str(e)[:200]}")
        pytest.fail(f"the feed was disturbed in each of {tries} tries: {seen}")


@pytest.fixture
def fed(jack_server):
    if not streamcore.sinks.device.portaudio_usable():
        pytest.fail("PortAudio was poisoned by a dead server in this process")
    settle(jack_server)
    feeder = Feeder(jack_server.name)
    engine = streamcore.Engine(sink=DeviceSink(jack_server.device), input_channels=2)
    try:
        engine.start()
        client = portaudio.jack_client_name()
        assert client, "PortAudio's JACK client has no name"
        assert len(feeder.feed(client)) == 2
        yield Fed(engine, feeder, jack_server.period)
    finally:
        engine.close()
        feeder.close()


class TestRecord:
    def test_bit_exact_at_the_predicted_frame(self, fed):
        engine = fed.engine

        def run(offset: int) -> None:
            at = engine.input_frame + 4800  # 0.1 s ahead
            recording = engine.record(48000, at=at)
            assert recording.wait(5)
            assert recording.end_reason == "finished" and recording.start_frame == at
            assert recording.overflows == 0 and recording.frames_played == 48000
            assert np.array_equal(recording.data, ramp(at - offset, 48000, 2)), (
                f"first frame is feeder frame {position(recording.data[0])}, predicted "
                f"{at - offset}")
        fed.clean(run)

    def test_the_next_frames_and_their_start(self, fed):
        engine = fed.engine

        def run(offset: int) -> None:
            before = engine.input_frame
            recording = engine.record(12000)
            assert recording.wait(5)
            assert recording.start_frame is not None and recording.start_frame >= before
            assert np.array_equal(recording.data,
                                  ramp(recording.start_frame - offset, 12000, 2))
        fed.clean(run)

    def test_overlapping_recordings_get_the_same_frames(self, fed):
        engine = fed.engine

        def run(offset: int) -> None:
            at = engine.input_frame + 2400
            first = engine.record(9600, at=at)
            second = engine.record(4800, at=at + 2400)
            assert first.wait(5) and second.wait(5)
            assert np.array_equal(first.data[2400:7200], second.data)
            assert np.array_equal(second.data, ramp(at + 2400 - offset, 4800, 2))
        fed.clean(run)

    def test_the_trace_places_both_clocks(self, fed):
        """`streamcore trace`'s Chrome trace carries each device callback with the output and
        input frames it began at and PortAudio's times: each callback moves the input clock
        by the frames of the one before, and the ADC and DAC times move forward."""
        engine = fed.engine
        time.sleep(0.3)
        trace = chrome_trace(engine.trace(), device=engine.sink.timestamps(),
                             origin_ns=engine.stats().start_ns)
        callbacks = [e["args"] for e in trace["traceEvents"] if e["name"] == "device callback"]
        assert len(callbacks) > 20
        for a, b in itertools.pairwise(callbacks):
            assert b["input_frame"] - a["input_frame"] == a["frames"]
            assert b["output_dac_time"] > a["output_dac_time"]
            assert b["input_adc_time"] > a["input_adc_time"]

    def test_a_frame_gone_by_is_refused(self, fed):
        engine = fed.engine
        with pytest.raises(InputLateError, match="has gone by"):
            engine.record(100, at=engine.input_frame - 1)

    def test_stop_keeps_what_was_captured(self, fed):
        engine = fed.engine

        def run(offset: int) -> None:
            recording = engine.record(48000 * 10)
            time.sleep(0.3)
            recording.stop()
            assert recording.wait(2) and recording.end_reason == "stopped"
            got = recording.frames_played
            assert 0 < got < 48000 * 10
            assert np.array_equal(recording.data[:got],
                                  ramp(recording.start_frame - offset, got, 2))
            assert not recording.data[got:].any()
        fed.clean(run)

    def test_closing_the_engine_ends_it_flushed(self, jack_server):
        engine = streamcore.Engine(sink=DeviceSink(jack_server.device), input_channels=1)
        engine.start()
        recording = engine.record(48000 * 60)
        engine.close()
        assert recording.done and recording.end_reason == "flushed"


class TestInputTap:
    def test_every_frame_in_order(self, fed):
        engine = fed.engine
        tap = engine.input

        def run(offset: int) -> None:
            tap.release(tap.readable)
            chunks, got, deadline = [], 0, time.monotonic() + 10
            while got < 48000 and time.monotonic() < deadline:
                if tap.readable:
                    chunk = tap.read(tap.readable)
                    chunks.append(chunk)
                    got += chunk.shape[0]
                else:
                    time.sleep(0.005)
            data = np.concatenate(chunks)
            assert data.shape[0] >= 48000
            # every frame in order, and where the tap's origin says it is
            origin = engine.stats().input["tap_origin"]
            index = int(tap.stats.frames_read) - data.shape[0]
            assert np.array_equal(data, ramp(index + origin - offset, data.shape[0], 2))
        fed.clean(run)
        stats = engine.stats()
        assert stats.input["tap_overflows"] == 0 and stats.glitches["input"] == 0

    def test_asyncio_reads_every_frame_without_polling(self, fed):
        """``await engine.aread_input(n)`` on the event loop's thread (woken by the mixer's
        progress eventfd): every frame in order, each read complete."""
        engine = fed.engine
        tap = engine.input

        async def read_all() -> np.ndarray:
            chunks = []
            for _ in range(10):
                chunk = await engine.aread_input(4800, timeout=10)
                assert chunk.shape[0] == 4800, "a read came back short"
                chunks.append(chunk)
            return np.concatenate(chunks)

        def run(offset: int) -> None:
            tap.release(tap.readable)
            data = asyncio.run(read_all())
            origin = engine.stats().input["tap_origin"]
            index = int(tap.stats.frames_read) - data.shape[0]
            assert np.array_equal(data, ramp(index + origin - offset, data.shape[0], 2))
        fed.clean(run)

    def test_aread_input_bad_arguments_and_no_input(self, fed):
        async def read(engine, *args, **kwargs):
            return await engine.aread_input(*args, **kwargs)

        with pytest.raises(ValueError, match="frames must be within"):
            asyncio.run(read(fed.engine, 0))
        with pytest.raises(ValueError, match="timeout"):
            asyncio.run(read(fed.engine, 10, timeout=-1))
        with (streamcore.Engine(sink="null") as engine,
              pytest.raises(ValueError, match="captures nothing")):
            asyncio.run(read(engine, 10))

    def test_a_reader_process_learns_that_the_engine_closed(self, jack_server):
        """The tap's writer is the engine's process: closing the engine says goodbye in the
        ring, and a reader in another process gets PeerGoneError instead of waiting on."""
        engine = streamcore.Engine(sink=DeviceSink(jack_server.device), input_channels=2)
        engine.start()
        tap = engine.input
        code = textwrap.dedent("""
            import json, sys
            from streamcore import PeerGoneError, Ring
            ring = Ring.attach(int(sys.argv[1]), lock="try")
            print("reading", flush=True)
            try:
                while True:
                    ring.read(ring.readable)
                    ring.wait_readable(1024, timeout=60)
            except PeerGoneError as e:
                print(json.dumps({"state": e.state, "side": e.side, "pid": e.pid}))
        """)
        child = subprocess.Popen([sys.executable, "-c", code, str(tap.fd)], pass_fds=[tap.fd],
                                 cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout.readline().strip() == "reading", child.stderr.read()
            time.sleep(0.3)
            engine.close()
            out, err = child.communicate(timeout=30)
        finally:
            child.kill()
            child.wait()
            engine.close()
        said = json.loads(out.strip().splitlines()[-1])
        assert said == {"state": "closed", "side": "writer", "pid": os.getpid()}, err

    def test_another_process_reads_it(self, fed):
        """The tap's memfd passed to a child, which attaches and reads 0.5 s: every frame in
        order, where the tap's origin says, with no Python of the engine's process between."""
        engine = fed.engine
        tap = engine.input
        code = textwrap.dedent("""
            import json, sys, time
            import numpy as np
            from streamcore import Ring
            ring = Ring.attach(int(sys.argv[1]), lock="try")
            ring.release(ring.readable)
            first = int(ring.stats.frames_read)
            chunks, got = [], 0
            while got < 24000:
                if ring.readable:
                    chunk = ring.read(ring.readable)
                    chunks.append(chunk)
                    got += chunk.shape[0]
                else:
                    time.sleep(0.002)
            np.save(sys.argv[2], np.concatenate(chunks))
            print(json.dumps({"first": first}))
        """)

        def run(offset: int) -> None:
            with tempfile.TemporaryDirectory() as folder:
                out = os.path.join(folder, "tap.npy")
                done = subprocess.run([sys.executable, "-c", code, str(tap.fd), out],
                                      pass_fds=[tap.fd], cwd=ROOT, capture_output=True,
                                      text=True, timeout=30)
                assert done.returncode == 0, done.stderr
                first = json.loads(done.stdout)["first"]
                data = np.load(out)
            stats = engine.stats().input
            want = ramp(first + stats["tap_origin"] - offset, data.shape[0], 2)
            bad = np.flatnonzero(np.any(data != want, axis=1))
            assert bad.size == 0, (
                f"{bad.size} of {data.shape[0]} frames differ, the first at {bad[0]}: feed "
                f"position {position(data[bad[0]])}, expected {position(want[bad[0]])}; "
                f"tap stats {stats}")
        fed.clean(run)

    def test_a_stalled_reader_loses_frames_counted_never_its_place(self, fed):
        engine = fed.engine
        tap = engine.input

        def run(_offset: int) -> None:
            tap.release(tap.readable)
            before = engine.stats().input["tap_lost_frames"]
            time.sleep(TAP_FRAMES / 48000 + 0.6)  # the tap fills, then frames are lost
            stats = engine.stats()
            assert stats.input["tap_overflows"] >= 1
            assert "XRUN" in stats.taints and stats.glitches["input"] >= 1
            lost = stats.input["tap_lost_frames"] - before
            assert lost > 0
            data = tap.read(tap.readable)
            time.sleep(0.3)  # room again: the zeros owed go in, then the frames that follow
            data = np.concatenate([data, tap.read(tap.readable)])
            first = int(np.flatnonzero(data[:, 1] != 0)[0])  # a retry may begin with zeros
            base = position(data[first]) - first
            # Each frame is where it belongs: zeros where frames were lost, the ramp
            # elsewhere (a run the JACK server xran in skips feeder cycles: made again).
            expected = ramp(base, data.shape[0], 2)
            kept = data[:, 1] != 0
            assert np.array_equal(data[kept], expected[kept])
            assert (~kept).sum() >= lost
        fed.clean(run)


class TestBadInput:
    def test_a_sink_that_does_not_capture(self):
        with pytest.raises(ValueError, match="input_channels needs a sink that captures"):
            streamcore.Engine(input_channels=2)

    @pytest.mark.parametrize("channels", [-1, 33, 2.0, True])
    def test_input_channels_out_of_range(self, channels):
        with pytest.raises((TypeError, ValueError), match="input_channels"):
            streamcore.Engine(sink="device", input_channels=channels)

    def test_an_engine_without_input(self):
        with streamcore.Engine(sink="manual") as engine:
            for call in (lambda: engine.input, lambda: engine.input_frame,
                         lambda: engine.record(10)):
                with pytest.raises(ValueError, match="captures nothing"):
                    call()

    @pytest.mark.parametrize("frames", [0, -5, 2**31 + 1, 1.5])
    def test_record_frames_out_of_range(self, jack_server, frames):
        with (streamcore.Engine(sink=DeviceSink(jack_server.device), input_channels=1) as engine,
              pytest.raises((TypeError, ValueError), match="frames")):
            engine.record(frames)

    def test_more_input_channels_than_the_device_has(self, jack_server):
        engine = streamcore.Engine(sink=DeviceSink(jack_server.device), input_channels=3)
        with pytest.raises(DeviceSettingsError, match=r"input_channels=3 is more than .* \(2\)"):
            engine.start()
        engine.close()

    def test_no_input_device_at_all(self):
        devices = [{"name": "out", "hostapi": 0, "max_output_channels": 2,
                    "max_input_channels": 0}]
        with pytest.raises(streamcore.NoDeviceError, match="no input device"):
            resolve_device(None, devices, [{"name": "ALSA"}], -1, "input")


class TestGaplessWrite:
    """sc_ring_write_gapless: frames that do not fit become zeros later, in their place."""

    def test_lost_frames_keep_their_place(self):
        ring = streamcore.Ring(1024, 1, "float32", lock=False)
        handle, _keep = ring.native_handle()
        gap = ffi.new("uint64_t *")
        source = np.arange(1, 1025, dtype=np.float32)

        def write(a: np.ndarray) -> int:
            return lib.sc_ring_write_gapless(handle, ffi.from_buffer(a), a.shape[0], gap)

        assert write(source[:1000]) == 1000 and gap[0] == 0
        assert write(source[1000:1024] + 0) == 24  # exactly full
        assert write(np.full(50, 7, np.float32)) == 0 and gap[0] == 50  # lost
        assert ring.read(100)[:, 0].tolist() == source[:100].tolist()
        # 100 free: the 50 lost frames go in as zeros first, then 50 of the next 80
        assert write(np.full(80, 9, np.float32)) == 50 and gap[0] == 30
        rest = ring.read(ring.readable)[:, 0]
        assert rest[:924].tolist() == source[100:].tolist()
        assert rest[924:974].tolist() == [0.0] * 50 and rest[974:].tolist() == [9.0] * 50
        assert write(np.full(5, 3, np.float32)) == 5 and gap[0] == 0
        assert ring.read(ring.readable)[:, 0].tolist() == [0.0] * 30 + [3.0] * 5
        ring.close()


@pytest.fixture
def looped(jack_server):
    """A started duplex engine whose outputs JACK connects straight back to its inputs (a
    digital loopback): yields (engine, the JACK client that made the connections)."""
    if not streamcore.sinks.device.portaudio_usable():
        pytest.fail("PortAudio was poisoned by a dead server in this process")
    settle(jack_server)
    engine = streamcore.Engine(sink=DeviceSink(jack_server.device), input_channels=2)
    linker = jack.Client("loop-linker", servername=jack_server.name, no_start_server=True)
    try:
        engine.start()
        pairs = loop_back(linker, portaudio.jack_client_name())
        time.sleep(0.2)
        yield engine, linker, pairs
    finally:
        engine.close()
        linker.close()


def _iodelay(server: str, seconds: float = 2.0) -> set[float]:
    """jack_iodelay's "total roundtrip latency" figures over ``seconds``, its out port
    connected to its in port (the same kind of loop)."""
    iodelay = require_program("jack_iodelay", "jackd2")
    env = {**os.environ, "JACK_DEFAULT_SERVER": server}
    proc = subprocess.Popen(["stdbuf", "-oL", iodelay], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        client = jack.Client("iodelay-linker", servername=server, no_start_server=True)
        try:
            assert wait_until(lambda: len(client.get_ports("jack_delay:")) == 2, 5, 0.05)
            client.connect("jack_delay:out", "jack_delay:in")
            time.sleep(seconds)
        finally:
            client.close()
    finally:
        proc.terminate()
        out = proc.communicate(timeout=5)[0]
    return {float(m) for m in re.findall(r"([\d.]+) frames\s+[\d.]+ ms total roundtrip", out)}


class TestLatency:
    """measure_latency() and playrec() through a JACK loopback: PortAudio's output ports
    connected to its own input ports.  A frame the device callback hands out in server
    cycle c comes back in cycle c + 1: one period, exactly, every time."""

    def test_measured_to_the_frame_and_stable(self, jack_server, looped):
        engine, _linker, _pairs = looped
        measured = [engine.measure_latency(0.5) for _ in range(5)]
        assert {m.frames for m in measured} == {jack_server.period}, measured
        assert all(m.fraction == 0.0 and m.confidence > 100 for m in measured), measured
        assert measured[0].ms == pytest.approx(1e3 * jack_server.period / 48000)
        assert measured[0].reported_frames is not None  # the host's figure, for comparison

    def test_agrees_with_a_recording_made_by_the_test(self, looped):
        """The test plays noise at an output frame and records from the input frame that
        leaves the device with it (the device's io offset); where the noise is found in that
        recording, bit-exact, is the round trip."""
        engine, _linker, _pairs = looped
        latency = engine.measure_latency(0.5)
        noise = np.random.default_rng(7).uniform(-0.5, 0.5, (4800, 2)).astype(np.float32)
        io_offset = engine.stats().sink["io_offset"]
        at = engine.frame + 48000 // 5
        recording = engine.record(4800 + 4096, at=at + io_offset)
        engine.play(noise, at=at)
        assert recording.wait(5)
        found = [k for k in range(4096) if np.array_equal(recording.data[k:k + 4800], noise)]
        assert found == [latency.frames]

    def test_playrec_returns_the_played_noise_bit_exact(self, looped):
        engine, _linker, _pairs = looped
        latency = engine.measure_latency(0.5)
        for seed in range(3):
            noise = np.random.default_rng(seed).uniform(-0.9, 0.9, (24000, 2)).astype(
                np.float32)
            assert np.array_equal(engine.playrec(noise, latency), noise)
        assert np.array_equal(engine.playrec(noise, latency.frames), noise)

    def test_playrec_measures_first_when_not_told(self, looped):
        engine, _linker, _pairs = looped
        tone = (0.25 * np.sin(np.arange(9600) / 7.0)).astype(np.float32)
        got = engine.playrec(np.stack([tone, -tone], axis=1))
        assert np.array_equal(got, np.stack([tone, -tone], axis=1))

    def test_jack_iodelay_measures_the_same_loop(self, jack_server, looped):
        """jack_iodelay's own out->in loop on the same server: the same round trip.  Both
        are measured between a frame leaving a JACK client and coming back to it; the
        engine's own buffering (the fill rendered ahead of the device) is before that
        point, so it adds nothing here (it is Engine.stats().fill on top, for a frame
        rendered now)."""
        engine, _linker, _pairs = looped
        ours = engine.measure_latency(0.5).frames
        theirs = _iodelay(jack_server.name)
        assert theirs, "jack_iodelay printed no round trip"
        print(f"\nround trip on a {jack_server.period}-frame JACK loop: streamcore {ours}, "
              f"jack_iodelay {sorted(theirs)}")
        # jack_iodelay estimates a fraction too (256.001 once): the same frame, to 0.01
        assert all(abs(figure - ours) < 0.01 for figure in theirs), (ours, theirs)

    def test_no_loopback_is_a_clear_error(self, looped):
        engine, linker, pairs = looped
        for out, port in pairs:
            linker.disconnect(out, port)
        with pytest.raises(LoopbackNotFoundError,
                           match=r"did not come back .* connect the outputs to the inputs"):
            engine.measure_latency(0.2)

    def test_bad_arguments(self, looped):
        engine, _linker, _pairs = looped
        for bad in (-1, 1.5, "x"):
            with pytest.raises((TypeError, ValueError), match="latency"):
                engine.playrec(np.zeros((10, 2), np.float32), bad)
        with pytest.raises(ValueError, match="array must hold frames"):
            engine.playrec(np.zeros((0, 2), np.float32), 0)
        for seconds in (0.0, 11, float("nan")):
            with pytest.raises(ValueError, match="seconds"):
                engine.measure_latency(seconds)

    def test_a_stopped_engine(self, jack_server):
        with streamcore.Engine(sink=DeviceSink(jack_server.device), input_channels=1) as engine:
            engine.stop()
            with pytest.raises(ValueError, match="start"):
                engine.measure_latency()


class TestRecordTo:
    """Engine.record_to(): the input leaves through a C thread into a file or a pipe."""

    def test_a_wav_file_is_bit_exact(self, fed, tmp_path):
        engine = fed.engine
        path = tmp_path / "in.wav"

        def run(offset: int) -> None:
            with engine.record_to(path, seconds=1.0) as writer:
                assert writer.wait(10)
                first = writer.stats()["first_frame"]
            data, rate = sf.read(path, dtype="float32", always_2d=True)
            assert rate == 48000 and data.shape == (48000, 2)
            assert first is not None and np.array_equal(data, ramp(first - offset, 48000, 2))
            assert sf.info(path).subtype == "FLOAT"
        fed.clean(run)

    def test_through_ffmpeg_from_a_pipe(self, fed, tmp_path):
        engine = fed.engine
        ffmpeg = require_program("ffmpeg", "ffmpeg")
        out = tmp_path / "out.f32"

        def run(offset: int) -> None:
            read_end, write_end = os.pipe()
            proc = subprocess.Popen([ffmpeg, "-loglevel", "error", "-f", "wav", "-i",
                                     "pipe:0", "-f", "f32le", "-c:a", "pcm_f32le", "-y",
                                     str(out)], stdin=read_end)
            os.close(read_end)
            try:
                writer = engine.record_to(write_end, frames=24000)
                assert writer.wait(10)
                writer.close()
            finally:
                os.close(write_end)
                assert proc.wait(20) == 0
            data = np.fromfile(out, dtype=np.float32).reshape(-1, 2)
            assert data.shape == (24000, 2)
            first = writer.stats()["first_frame"]
            assert np.array_equal(data, ramp(first - offset, 24000, 2))
        fed.clean(run)

    def test_int16_raw(self, fed, tmp_path):
        engine = fed.engine
        path = tmp_path / "in.s16"

        def run(offset: int) -> None:
            with engine.record_to(path, frames=4800, format="s16le") as writer:
                assert writer.wait(10)
            data = np.fromfile(path, dtype="<i2").reshape(-1, 2)
            expected = ramp(writer.stats()["first_frame"] - offset, 4800, 2)
            assert np.array_equal(data, np.clip(np.rint(expected * 32768), -32768, 32767))
        fed.clean(run)

    def test_a_stalled_pipe_reader_is_counted_not_silent(self, fed):
        engine = fed.engine
        read_end, write_end = os.pipe()
        try:
            writer = engine.record_to(write_end)
            time.sleep(TAP_FRAMES / 48000 + 1.0)  # the pipe fills, then the tap
            stats = engine.stats()
            assert stats.input["tap_overflows"] >= 1 and stats.glitches["input"] >= 1
            assert "XRUN" in stats.taints
            started = time.monotonic()
            writer.close()  # never hangs on the stalled reader
            assert time.monotonic() - started < 2
        finally:
            os.close(read_end)
            os.close(write_end)

    def test_the_reader_going_away_ends_it_with_an_error(self, fed):
        engine = fed.engine
        read_end, write_end = os.pipe()
        writer = engine.record_to(write_end)
        os.close(read_end)
        try:
            with pytest.raises(streamcore.SinkError, match="Broken pipe"):
                writer.wait(5)
            with pytest.raises(streamcore.SinkError):
                writer.close()
        finally:
            os.close(write_end)

    def test_one_reader_for_the_tap(self, fed, tmp_path):
        engine = fed.engine
        with engine.record_to(tmp_path / "a.wav", frames=100) as writer:
            with pytest.raises(ValueError, match="one"):
                engine.record_to(tmp_path / "b.wav", frames=100)
            with pytest.raises(ValueError, match="one reader"):
                engine.input  # noqa: B018
            writer.wait(5)
        with engine.record_to(tmp_path / "c.wav", frames=100) as again:  # free again
            assert again.wait(5)

    @pytest.mark.parametrize(("kwargs", "match"), [
        ({"format": "mp3"}, "format"), ({"dtype": "int8"}, "dtype"),
        ({"seconds": 1, "frames": 5}, "not both"), ({"frames": 0}, "frames"),
        ({"seconds": 1e-9}, "less than a frame")])
    def test_bad_arguments(self, jack_server, tmp_path, kwargs, match):
        with (streamcore.Engine(sink=DeviceSink(jack_server.device), input_channels=1) as engine,
              pytest.raises(ValueError, match=match)):
            engine.record_to(tmp_path / "x.wav", **kwargs)


def _child_client(client: jack.Client, known: set[str], timeout: float = 15) -> str:
    """The JACK client name of a child's PortAudio stream: the first client not in ``known``
    once it has both its input ports and both its output ports (PortAudio registers them
    one by one)."""
    found: list[str] = []

    def appeared() -> bool:
        ports = client.get_ports(is_audio=True)
        names = {p.name.split(":")[0] for p in ports} - known
        found[:] = sorted(
            name for name in names
            if sum(p.name.startswith(f"{name}:") and p.is_input for p in ports) == 2
            and sum(p.name.startswith(f"{name}:") and p.is_output for p in ports) == 2)
        return bool(found)

    assert wait_until(appeared, timeout, 0.02), "the child's stream did not appear"
    return found[0]


class TestCli:
    """`streamcore record` and `streamcore latency` in a child, on the JACK device."""

    def _known(self, client: jack.Client) -> set[str]:
        return {p.name.split(":")[0] for p in client.get_ports(is_audio=True)}

    def _tail_is_the_feed(self, data: np.ndarray) -> int:
        """From the first frame the feed reached (before it: zeros), a contiguous ramp to
        the end, bit-exact; returns how many frames that is."""
        nonzero = np.flatnonzero(data[:, 1] != 0)
        assert nonzero.size, "nothing of the feed arrived"
        first = int(nonzero[0])
        tail = data[first:]
        assert np.array_equal(tail, ramp(position(tail[0]), tail.shape[0], 2))
        return tail.shape[0]

    def _cli(self, *args: str, **kwargs: Any) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "streamcore", *args], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)

    def test_record_to_a_file(self, jack_server, tmp_path):
        settle(jack_server)
        feeder = Feeder(jack_server.name, name="cli-feeder")
        try:
            known = self._known(feeder.client)
            out = tmp_path / "rec.wav"
            proc = self._cli("record", str(out), "--seconds", "2", "--device",
                             str(jack_server.device), "--progress")
            feeder.feed(_child_client(feeder.client, known))
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            feeder.close()
        assert proc.returncode == 0, stderr.decode()
        assert b"recorded 96000 frames" in stderr, stderr.decode()
        # the progress line: seconds written and a meter per channel (the feed is a ramp
        # far below full scale: some dB under 0), and the frames lost
        line = stdout.decode().split("\r")[-1]
        assert re.search(r"\d+\.\d s  \[[#.]{12}\]\s*-?\d+\.\d \[[#.]{12}\]", line), stdout
        assert "lost 0" in line, stdout
        data, rate = sf.read(out, dtype="float32", always_2d=True)
        assert rate == 48000 and data.shape == (96000, 2)
        if "device xruns 0" in stderr.decode():
            assert self._tail_is_the_feed(data) > 48000

    def test_record_pipe_into_ffmpeg(self, jack_server, tmp_path):
        ffmpeg = require_program("ffmpeg", "ffmpeg")
        settle(jack_server)
        feeder = Feeder(jack_server.name, name="cli-feeder")
        out = tmp_path / "rec.f32"
        try:
            known = self._known(feeder.client)
            proc = self._cli("record", "--pipe", "--seconds", "1.5", "--device",
                             str(jack_server.device))
            convert = subprocess.Popen([ffmpeg, "-loglevel", "error", "-f", "wav", "-i",
                                        "pipe:0", "-f", "f32le", "-c:a", "pcm_f32le", "-y",
                                        str(out)], stdin=proc.stdout)
            assert proc.stdout is not None
            proc.stdout.close()  # ffmpeg holds the read end
            feeder.feed(_child_client(feeder.client, known))
            assert convert.wait(30) == 0
            stderr = proc.communicate(timeout=30)[1].decode()
        finally:
            feeder.close()
        assert proc.returncode == 0, stderr
        data = np.fromfile(out, dtype=np.float32).reshape(-1, 2)
        assert data.shape == (72000, 2), stderr
        if "device xruns 0" in stderr:
            assert self._tail_is_the_feed(data) > 24000

    def test_latency(self, jack_server):
        settle(jack_server)
        linker = jack.Client("cli-linker", servername=jack_server.name, no_start_server=True)
        try:
            known = self._known(linker)
            proc = self._cli("latency", "--json", "--wait", "15", "--seconds", "0.5",
                             "--device", str(jack_server.device))
            loop_back(linker, _child_client(linker, known))
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            linker.close()
        assert proc.returncode == 0, stderr.decode()
        result = json.loads(stdout)
        assert result["frames"] == jack_server.period, result
        assert result["reported_frames"] is not None
        assert result["difference_frames"] == result["frames"] - result["reported_frames"]

    def test_latency_without_a_loopback_says_what_to_do(self, jack_server):
        done = subprocess.run([sys.executable, "-m", "streamcore", "latency", "--seconds",
                               "0.2", "--device", str(jack_server.device)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "connect the outputs to the inputs" in done.stderr, done.stderr

    def test_record_needs_a_target(self, jack_server):
        done = subprocess.run([sys.executable, "-m", "streamcore", "record", "--seconds", "1"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and "give OUT" in done.stderr, done.stderr


class TestMonitor:
    """engine.monitor(): the input mixed into the output in C.  Through a JACK loop from a
    feeder into the engine's inputs and from its outputs into a recorder, what the recorder
    hears is the feed, bit-exact (gain 1.0), a fixed number of frames later."""

    @pytest.fixture
    def heard(self, fed, jack_server):
        """A JACK client recording the engine's outputs."""
        from tests.test_device_sink import Recorder

        client = portaudio.jack_client_name()
        recorder = Recorder(jack_server.name, 48000 * 3)
        try:
            recorder.connect_ports(sorted(p.name for p in recorder.client.get_ports(
                f"{client}:", is_output=True, is_audio=True)))
            yield recorder
        finally:
            recorder.close()

    def _monitored(self, engine: streamcore.Engine, recorder: Any, seconds: float,
                   **kwargs: Any) -> np.ndarray:
        """What the recorder heard over ``seconds`` of a monitor (after it settled), from
        the first frame of the feed on."""
        monitor = engine.monitor(**kwargs)
        time.sleep(0.5)
        recorder.n = 0
        time.sleep(seconds)
        got = recorder.data[:recorder.n].copy()
        monitor.stop(0)
        assert monitor.wait(2)
        return got[np.flatnonzero(got[:, 0] != 0)[0]:]

    def test_the_feed_comes_out_bit_exact(self, fed, heard):
        def run(_offset: int) -> None:
            got = self._monitored(fed.engine, heard, 1.0)
            assert got.shape[0] > 24000
            assert np.array_equal(got, ramp(position(got[0]), got.shape[0], 2))
            assert fed.engine.stats().input["monitor_dropped"] == 0
        fed.clean(run)

    def test_a_mono_selection_and_gain(self, fed, heard):
        def run(_offset: int) -> None:
            got = self._monitored(fed.engine, heard, 0.5, gain=0.5, input_channels=[1, 1])
            feed = ramp(-round(float(got[0, 0]) * 2 * (1 << 24)), got.shape[0], 2)
            expected = np.stack([feed[:, 1], feed[:, 1]], axis=1) * np.float32(0.5)
            assert np.array_equal(got, expected)
        fed.clean(run)

    def test_bad_selections(self, fed):
        engine = fed.engine
        with pytest.raises(ValueError, match="an input channel"):
            engine.monitor(input_channels=[2])
        with pytest.raises(ValueError, match="1 or 2"):
            engine.monitor(input_channels=[0, 1, 0])
        with pytest.raises(TypeError, match="list of ints"):
            engine.monitor(input_channels="01")


class TestReadme:
    """The README's duplex example runs on the JACK device, with a loopback made by a thread
    as soon as the engine's ports exist: it measures one period and playrec's result is
    the noise itself."""

    def test_the_duplex_example(self, jack_server, tmp_path, monkeypatch):
        text = (ROOT / "README.md").read_text()
        (block,) = re.findall(r"^```python duplex\n(.*?)^```", text, flags=re.S | re.M)
        assert 'sink="device"' in block
        code = block.replace('sink="device"',
                             f"sink=streamcore.DeviceSink({jack_server.device})")
        settle(jack_server)
        linker = jack.Client("readme-linker", servername=jack_server.name,
                             no_start_server=True)
        known = {p.name.split(":")[0] for p in linker.get_ports(is_audio=True)
                 if p.is_output and p.name.startswith("system:")}
        stop = threading.Event()

        def connect_when_ready() -> None:
            loop_back(linker, _child_client(linker, known | {"system"}, timeout=10))
            stop.wait()

        thread = threading.Thread(target=connect_when_ready, daemon=True)
        thread.start()
        monkeypatch.chdir(tmp_path)
        namespace: dict[str, Any] = {"__name__": "readme"}
        try:
            exec(compile(code, "README.md duplex block", "exec"), namespace)
        finally:
            stop.set()
            thread.join(5)
            linker.close()
        assert namespace["take"].data.shape == (48000, 2)
        assert sf.info(tmp_path / "input.wav").frames == 48000
        assert namespace["latency"].frames == jack_server.period
        assert np.array_equal(namespace["heard"], namespace["noise"])


class TestUnderLoad:
    """30 s of full duplex at blocksize 256 while bench/load.py's load runs (a CPU hog per
    core, and a Python thread in this process churning allocations and gc.collect()): the
    mixer, the capture and the device callback are C, so none of them drops a frame.  The
    dummy server's own xruns (it has some under CPU hogs, see tests/services/jack.py) are the
    environment's and are printed; what the engine could lose is asserted to be nothing."""

    def test_thirty_seconds_of_duplex(self, jack_server):
        from bench.load import Load

        settle(jack_server)
        engine = streamcore.Engine(sink=DeviceSink(jack_server.device), blocksize=256,
                                   input_channels=2)
        tone = (0.2 * np.sin(np.arange(48000) * 2 * np.pi * 440 / 48000)).astype(np.float32)
        try:
            engine.start()
            with Load(enabled=True) as load:
                voice = engine.play(tone, loop=True)
                recording = engine.record(30 * 48000)
                assert recording.wait(60), "the recording did not finish"
                voice.stop()
            stats = engine.stats()
        finally:
            engine.close()
        glitches = stats.glitches
        print(f"\n30 s duplex under load ({load.facts['load']}, {load.collections} gc "
              f"collections): glitches {glitches}, server xruns "
              f"{stats.sink.get('server_xruns')}, taints {sorted(stats.taints)}")
        assert recording.end_reason == "finished" and recording.overflows == 0
        assert stats.input["input_gaps"] == 0 and glitches["input"] == 0
        assert stats.sink["input_lost_frames"] == 0
        assert glitches["mixer"] == 0 and glitches["device_ring"] == 0
        assert stats.underruns == 0


# Duplex on PipeWire through pipewire-jack, in a child (its libjack is PipeWire's).
_PIPEWIRE_DUPLEX = """
    import json, time
    import jack
    import numpy as np
    import streamcore
    from streamcore.sinks import portaudio
    from streamcore.sinks.device import DeviceSink
    from tests.helpers.feeder import Feeder, position, ramp

    sink = {sink!r}
    engine = streamcore.Engine(sink=DeviceSink(sink), input_channels=2)
    engine.start()
    client = portaudio.jack_client_name()
    linker = jack.Client("linker", no_start_server=True)
    outs = sorted(p.name for p in linker.get_ports(f"{{client}}:", is_output=True, is_audio=True))
    ins = sorted(p.name for p in linker.get_ports(f"{{client}}:", is_input=True, is_audio=True))

    def cut_inputs():
        for port in ins:
            for source in linker.get_all_connections(port):
                linker.disconnect(source.name, port)

    # 1. a feeder's ramp, recorded
    feeder = Feeder(None)
    cut_inputs()
    for out, port in zip(feeder.ports, ins):
        linker.connect(out.name, port)
    time.sleep(0.5)
    recording = engine.record(48000)
    recording.wait(10)
    data = recording.data
    start = position(data[0])
    recorded_exact = bool(np.array_equal(data, ramp(start, 48000, 2)))
    feeder.close()

    # 2. a loopback through the null sink: the engine's outputs play into the sink (as
    # PortAudio connected them), its inputs take the sink's monitor.  (A link from a node's
    # output straight to its own input carries nothing on PipeWire 0.3.65: a cycle.)
    cut_inputs()
    for channel, port in zip(("FL", "FR"), ins):
        linker.connect(f"{sink}:monitor_{{channel}}", port)
    time.sleep(0.3)
    try:
        measured = [engine.measure_latency(0.5) for _ in range(3)]
        noise = np.random.default_rng(5).uniform(-0.5, 0.5, (24000, 2)).astype(np.float32)
        playrec_exact = bool(np.array_equal(engine.playrec(noise, measured[-1]), noise))
    except streamcore.SinkError as e:  # the server glitched in each of the engine's tries
        if "glitched" not in str(e):
            raise
        print(json.dumps({{"glitched": str(e), "taints": sorted(engine.stats().taints)}}))
        raise SystemExit(0)
    stats = engine.stats()
    linker.close()
    engine.close()
    print(json.dumps({{"recorded_exact": recorded_exact, "frames": [m.frames for m in measured],
                      "confidence": min(m.confidence for m in measured),
                      "reported": measured[-1].reported_frames, "playrec_exact": playrec_exact,
                      "host_period": stats.sink.get("host_period"), "glitches": stats.glitches,
                      "taints": sorted(stats.taints)}}))
"""


class TestOnPipeWire:
    """The same duplex engine on PipeWire (pipewire-jack, quantum 256): a feeder's ramp is
    recorded bit-exact, the round trip through the null sink (the engine's outputs into it,
    its monitor into the engine's inputs) is measured the same in 3 runs, and playrec
    returns the noise bit-exact."""

    def test_record_latency_and_playrec(self, pipewire_server):
        def exact(r: dict) -> bool:
            return bool(r["recorded_exact"] and len(set(r["frames"])) == 1
                        and r["frames"][0] % r["host_period"] == 0 and r["confidence"] > 100
                        and r["playrec_exact"])

        runs = []
        for _ in range(5):
            result = pipewire_server.run_child(
                _PIPEWIRE_DUPLEX.format(sink=pipewire_server.sink_name), via="jack",
                timeout=90)
            runs.append(result)
            print(f"\nPipeWire duplex: {result}")
            # A run PipeWire glitched in (the VM's noise: an xrun moves the input clock) may
            # be inexact, or the engine refuses to align it (SinkError after its own tries,
            # CI saw 3 glitched tries in a row once): it is made again; a clean run must be
            # exact.
            if "glitched" not in result and (exact(result) or not result["taints"]):
                break
        assert "glitched" not in runs[-1] and exact(runs[-1]), runs
