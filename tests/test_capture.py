"""Capture (issue 16): Engine(input_channels=N) on a real JACK server (dummy backend).

A second JACK client (tests/helpers/feeder.py) plays a known float32 ramp into the engine's
input ports; every frame the engine hands on can be checked bit-exact and placed: the
device sink's per-callback log (input frame at each callback) matched with the feeder's
cycle log gives the input frame each feeder frame becomes, so a recording's position is
predicted, not just found.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import streamcore
from streamcore._native import ffi, lib
from streamcore.capture import TAP_FRAMES
from streamcore.errors import DeviceSettingsError, InputLateError
from streamcore.sinks import portaudio
from streamcore.sinks.device import DeviceSink, resolve_device
from tests.helpers.feeder import Feeder, position, ramp
from tests.services.jack import settle


@pytest.fixture
def fed(jack_server):
    """A started duplex engine on the JACK device whose inputs the feeder plays into; yields
    (engine, feeder, offset): input frame = feeder k + offset."""
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
        time.sleep(0.3)  # the new connections carry the feed from the next cycle on
        offsets = feeder.offset(engine.sink.timestamps(), jack_server.period)
        assert len(offsets) == 1, f"the feed's position is not one offset: {offsets}"
        yield engine, feeder, offsets.pop()
    finally:
        engine.close()
        feeder.close()


class TestRecord:
    def test_bit_exact_at_the_predicted_frame(self, fed):
        engine, _feeder, offset = fed
        at = engine.input_frame + 4800  # 0.1 s ahead
        recording = engine.record(48000, at=at)
        assert recording.wait(5)
        assert recording.end_reason == "finished" and recording.start_frame == at
        expected = ramp(at - offset, 48000, 2)
        assert np.array_equal(recording.data, expected), (
            f"first frame is feeder frame {position(recording.data[0])}, predicted "
            f"{at - offset}")
        assert recording.overflows == 0 and recording.frames_played == 48000

    def test_the_next_frames_and_their_start(self, fed):
        engine, _feeder, offset = fed
        before = engine.input_frame
        recording = engine.record(12000)
        assert recording.wait(5)
        assert recording.start_frame is not None and recording.start_frame >= before
        assert np.array_equal(recording.data, ramp(recording.start_frame - offset, 12000, 2))

    def test_overlapping_recordings_get_the_same_frames(self, fed):
        engine, _feeder, offset = fed
        at = engine.input_frame + 2400
        first = engine.record(9600, at=at)
        second = engine.record(4800, at=at + 2400)
        assert first.wait(5) and second.wait(5)
        assert np.array_equal(first.data[2400:7200], second.data)
        assert np.array_equal(second.data, ramp(at + 2400 - offset, 4800, 2))

    def test_a_frame_gone_by_is_refused(self, fed):
        engine, _feeder, _offset = fed
        with pytest.raises(InputLateError, match="has gone by"):
            engine.record(100, at=engine.input_frame - 1)

    def test_stop_keeps_what_was_captured(self, fed):
        engine, _feeder, offset = fed
        recording = engine.record(48000 * 10)
        time.sleep(0.3)
        recording.stop()
        assert recording.wait(2) and recording.end_reason == "stopped"
        got = recording.frames_played
        assert 0 < got < 48000 * 10
        assert np.array_equal(recording.data[:got], ramp(recording.start_frame - offset, got, 2))
        assert not recording.data[got:].any()

    def test_closing_the_engine_ends_it_flushed(self, jack_server):
        engine = streamcore.Engine(sink=DeviceSink(jack_server.device), input_channels=1)
        engine.start()
        recording = engine.record(48000 * 60)
        engine.close()
        assert recording.done and recording.end_reason == "flushed"


class TestInputTap:
    def test_every_frame_in_order(self, fed):
        engine, _feeder, offset = fed
        tap = engine.input
        first = engine.input_frame  # the tap's first frame is at or after this one
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
        start = position(data[0])
        assert start + offset >= first
        assert np.array_equal(data, ramp(start, data.shape[0], 2))
        stats = engine.stats()
        assert stats.input["tap_overflows"] == 0 and stats.glitches["input"] == 0

    def test_a_stalled_reader_loses_frames_counted_never_its_place(self, fed):
        engine, _feeder, _offset = fed
        tap = engine.input
        time.sleep(TAP_FRAMES / 48000 + 0.6)  # the tap fills, then frames are lost
        stats = engine.stats()
        assert stats.input["tap_overflows"] >= 1 and stats.input["tap_lost_frames"] > 0
        assert "XRUN" in stats.taints and stats.glitches["input"] >= 1
        lost = stats.input["tap_lost_frames"]
        data = tap.read(tap.readable)
        base = position(data[0])
        time.sleep(0.3)  # room again: the zeros owed go in, then the frames that follow
        data = np.concatenate([data, tap.read(tap.readable)])
        # Each frame is where it belongs: zeros where frames were lost, the ramp elsewhere.
        expected = ramp(base, data.shape[0], 2)
        kept = data[:, 1] != 0
        assert np.array_equal(data[kept], expected[kept])
        assert (~kept).sum() >= lost


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
