"""Frame-exact control (issue 17): Voice.stop(at=frame) lands on exactly that frame, checked
bit-exact against numpy on the manual clock (the test renders every period itself)."""

from __future__ import annotations

import numpy as np
import pytest

import streamcore

RATE, BLOCK = 48000, 128


def _noise(frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (frames, 2)).astype(np.float32)


def _faded(x: np.ndarray, frames: int) -> np.ndarray:
    """What the mixer's linear fade makes of x's first ``frames`` frames at gain 1, in the
    same float32 steps: x * 1.0f * ((F - 1 - j) / F)."""
    j = np.arange(frames, dtype=np.float32)
    env = (np.float32(frames) - np.float32(1) - j) / np.float32(frames)
    return (x[:frames] * np.float32(1.0)) * env[:, None]


@pytest.mark.parametrize("at", [1000, 1024, 1, 127, 3000])
def test_stop_without_a_fade_ends_on_the_frame(at):
    x = _noise(4096)
    with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
        voice = engine.play(x)
        voice.stop(fade=0, at=at)
        out = engine.render(32)
    assert np.array_equal(out[:at], x[:at])
    assert not out[at:].any()
    assert voice.done and voice.end_reason == "stopped" and voice.frames_played == at


@pytest.mark.parametrize(("at", "fade"), [(1000, 300), (1000, 1), (2000, 128), (640, 1500)])
def test_the_fade_starts_on_the_frame(at, fade):
    x = _noise(8192, seed=at)
    with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
        voice = engine.play(x)
        voice.stop(fade=fade / RATE, at=at)
        out = engine.render(64)
    assert np.array_equal(out[:at], x[:at])
    assert np.array_equal(out[at:at + fade], _faded(x[at:], fade))
    assert not out[at + fade:].any()
    assert voice.end_reason == "stopped" and voice.frames_played == at + fade


def test_a_stop_before_the_voice_starts_means_it_never_plays():
    x = _noise(1024)
    with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
        voice = engine.play(x, at=800)
        voice.stop(fade=0, at=500)
        out = engine.render(16)
    assert not out.any() and voice.end_reason == "stopped" and voice.frames_played == 0


def test_a_frame_already_rendered_stops_at_the_next_period():
    x = _noise(8192)
    with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
        voice = engine.play(x)
        first = engine.render(2)
        voice.stop(fade=0, at=10)  # long gone: from the next period, as stop() without at
        rest = engine.render(4)
    assert np.array_equal(first, x[:2 * BLOCK]) and not rest.any()
    assert voice.frames_played == 2 * BLOCK


def test_a_later_stop_replaces_nothing_when_already_fading_faster():
    x = _noise(8192)
    with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
        voice = engine.play(x)
        voice.stop(fade=100 / RATE, at=300)
        out = engine.render(16)
    assert np.array_equal(out[300:400], _faded(x[300:], 100)) and not out[400:].any()


@pytest.mark.parametrize("at", [-1, 1.5, "0"])
def test_bad_frames(at):
    with streamcore.Engine(sink="manual") as engine:
        voice = engine.play(_noise(256))
        with pytest.raises((TypeError, ValueError), match="at"):
            voice.stop(at=at)


@pytest.mark.parametrize("at", [1000, 1024, 129, 2500])
def test_a_gain_change_lands_on_the_frame(at):
    """set(gain=0.5, at=f): every frame before f at gain 1 (bit-exact), every frame from f
    at 0.5 (x * 0.5f: exact), no ramp."""
    x = _noise(4096, seed=at)
    with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
        voice = engine.play(x)
        voice.set(gain=0.5, at=at)
        out = engine.render(32)
    assert np.array_equal(out[:at], x[:at])
    assert np.array_equal(out[at:], x[at:] * np.float32(0.5))
    assert voice.gain == 0.5


def test_a_pan_change_and_a_stop_in_one_period():
    """Two events inside one period: pan hard left from frame 300, then the end at 400."""
    x = _noise(4096, seed=7)
    with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
        voice = engine.play(x)
        voice.set(pan=-1.0, at=300)
        voice.stop(fade=0, at=400)
        out = engine.render(8)
    assert np.array_equal(out[:300], x[:300])
    # balance law: pan -1 keeps the left at the gain and scales the right by (1 + pan) = 0
    assert np.array_equal(out[300:400, 0], x[300:400, 0])
    assert not out[300:400, 1].any()
    assert not out[400:].any() and voice.frames_played == 400


def test_a_change_before_a_waiting_voice_starts_applies_from_its_start():
    x = _noise(1024, seed=3)
    with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
        voice = engine.play(x, at=500)
        voice.set(gain=0.25, at=200)
        out = engine.render(16)
    assert not out[:500].any()
    assert np.array_equal(out[500:1524], x * np.float32(0.25))


def test_set_without_at_still_ramps_over_a_period():
    x = np.ones((4096, 2), np.float32)
    with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
        voice = engine.play(x)
        engine.render(1)
        voice.set(gain=0.0)
        out = engine.render(2)
    assert 0 < out[0, 0] < 1 and out[BLOCK - 1, 0] == 0 and not out[BLOCK:].any()


class TestLateStarts:
    """play(at=f, late=...) for a frame f already rendered (the manual clock rendered 512)."""

    def _late(self, late: str, x: np.ndarray, loop: bool = False):
        engine = streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual")
        engine.render(4)  # frames 0 .. 511 are out
        voice = engine.play(x, at=100, late=late, loop=loop)
        out = engine.render(8)
        engine.close()
        return voice, out

    def test_play_starts_from_the_first_frame_now(self):
        x = _noise(2048)
        voice, out = self._late("play", x)
        assert np.array_equal(out[:1024], x[:1024]) and voice.start_frame == 100

    def test_skip_plays_on_as_if_started_in_time(self):
        x = _noise(2048)
        voice, out = self._late("skip", x)
        assert np.array_equal(out[:1024], x[412:1436])  # 512 - 100 frames were due
        assert voice.start_frame == 512

    def test_skip_past_the_end_is_finished(self):
        voice, out = self._late("skip", _noise(300))
        assert not out.any() and voice.end_reason == "finished" and voice.frames_played == 0

    def test_skip_in_a_loop_lands_where_the_loop_is(self):
        x = _noise(150)
        _voice, out = self._late("skip", x, loop=True)
        expected = np.concatenate([x] * 10)[412 % 150:][:1024]
        assert np.array_equal(out, expected)

    def test_error_plays_nothing_and_wait_says_why(self):
        voice, out = self._late("error", _noise(2048))
        assert not out.any() and voice.end_reason == "late"
        with pytest.raises(streamcore.LateStartError, match="late='error'"):
            voice.wait(1)

    def test_an_unknown_policy(self):
        with (streamcore.Engine(sink="manual") as engine,
              pytest.raises(ValueError, match="late must be")):
            engine.play(_noise(16), late="later")


class TestLateStreams:
    """stream(at=f, late=...) for a frame already rendered: the same policies, the stream's
    frame k belonging at output frame f + k (the manual clock rendered 512)."""

    def _late(self, late: str, written: int, later: int = 0):
        x = _noise(written + later, seed=written)
        engine = streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual")
        engine.render(4)  # frames 0 .. 511 are out
        voice = engine.stream(channels=2, frames=8192, at=100, late=late)
        assert voice.write(x[:written], timeout=0) == written
        first = engine.render(2)
        assert voice.write(x[written:], timeout=0) == later
        voice.finish()
        rest = engine.render(24)
        engine.close()
        return voice, x, np.concatenate([first, rest])

    def test_play_starts_from_the_first_frame_now(self):
        voice, x, out = self._late("play", 2048)
        assert np.array_equal(out[:2048], x) and not out[2048:].any()
        assert voice.end_reason == "finished"

    def test_skip_drops_the_queued_frames_that_were_due(self):
        _voice, x, out = self._late("skip", 2048)
        assert np.array_equal(out[:2048 - 412], x[412:])  # 512 - 100 frames were due
        assert not out[2048 - 412:].any()

    def test_skip_drops_due_frames_written_after_the_start_too(self):
        # Only 100 frames queued at the start, 412 due: the next 312 written are dropped as
        # they arrive, and the rest plays from there (the two periods rendered before it was
        # written were an underrun, which skips nothing).
        _voice, x, out = self._late("skip", 100, later=2000)
        assert not out[:256].any()
        assert np.array_equal(out[256:256 + 2100 - 412], x[412:])
        assert not out[256 + 2100 - 412:].any()

    def test_error_plays_nothing(self):
        engine = streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual")
        engine.render(4)
        voice = engine.stream(channels=2, at=100, late="error")
        engine.render(1)
        engine.close()
        assert voice.end_reason == "late"
        with pytest.raises(streamcore.LateStartError):
            voice.wait(0)


def _placed(x: np.ndarray, mapping: list[int], channels: int, frames: int) -> np.ndarray:
    out = np.zeros((frames, channels), np.float32)
    out[:x.shape[0], mapping] = x
    return out


class TestChannelMaps:
    """channels=[...] puts each of a voice's channels on one engine channel, bit-exact."""

    @pytest.mark.parametrize(("engine_channels", "mapping"),
                             [(4, [2, 3]), (4, [3, 1, 0]), (8, [5, 0]), (8, [7]),
                              (8, [0, 1, 2, 3, 4, 5, 6, 7])])
    def test_a_buffer_voice_lands_on_its_channels(self, engine_channels, mapping):
        x = np.random.default_rng(len(mapping)).uniform(
            -0.5, 0.5, (3000, len(mapping))).astype(np.float32)
        with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, channels=engine_channels,
                               sink="manual") as engine:
            voice = engine.play(x, channels=mapping)
            out = engine.render(32)
        assert np.array_equal(out, _placed(x, mapping, engine_channels, out.shape[0]))
        assert voice.channel_map == mapping and voice.end_reason == "finished"

    @pytest.mark.parametrize(("engine_channels", "mapping"), [(4, [2, 3]), (8, [6, 1])])
    def test_a_stream_voice_lands_on_its_channels(self, engine_channels, mapping):
        x = np.random.default_rng(7).uniform(-0.5, 0.5, (3000, 2)).astype(np.float32)
        with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, channels=engine_channels,
                               sink="manual") as engine:
            voice = engine.stream(channels=mapping, frames=4096)
            assert voice.ring.channels == 2
            assert voice.write(x, timeout=0) == 3000
            voice.finish()
            out = engine.render(32)
        assert np.array_equal(out, _placed(x, mapping, engine_channels, out.shape[0]))
        assert voice.end_reason == "finished"

    def test_a_ring_passed_in_with_a_map(self):
        x = np.random.default_rng(8).uniform(-0.5, 0.5, (1000, 2)).astype(np.float32)
        with (streamcore.Ring(2048, 2) as ring,
              streamcore.Engine(samplerate=RATE, blocksize=BLOCK, channels=4,
                                sink="manual") as engine):
            ring.write(x)
            voice = engine.stream(ring=ring, channels=[1, 3])
            voice.finish()
            out = engine.render(16)
        assert np.array_equal(out, _placed(x, [1, 3], 4, out.shape[0]))

    def test_mapped_and_unmapped_voices_mix(self):
        a = np.random.default_rng(1).uniform(-0.25, 0.25, (1024, 2)).astype(np.float32)
        b = np.random.default_rng(2).uniform(-0.25, 0.25, (1024, 4)).astype(np.float32)
        with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, channels=4,
                               sink="manual") as engine:
            engine.play(a, channels=[0, 2], gain=0.5)
            engine.play(b)
            out = engine.render(8)
        expected = b.copy()
        expected[:, [0, 2]] += a * np.float32(0.5)
        assert np.array_equal(out, expected)

    def test_gain_steps_and_stops_on_the_frame(self):
        x = np.random.default_rng(3).uniform(-0.5, 0.5, (4096, 2)).astype(np.float32)
        with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, channels=4,
                               sink="manual") as engine:
            voice = engine.play(x, channels=[3, 2])
            voice.set(gain=0.5, at=1000)
            voice.stop(fade=0, at=2000)
            out = engine.render(32)
        expected = _placed(x[:2000], [3, 2], 4, out.shape[0])
        expected[1000:2000] = _placed(x[1000:2000] * np.float32(0.5), [3, 2], 4, 1000)
        assert np.array_equal(out, expected)

    @pytest.mark.parametrize(("mapping", "message"), [
        ([4], "within 0..3"), ([1, 1], "twice"), ([], "at least one"),
        ("23", "list of output channels"), ([0.5], "must be an int")])
    def test_bad_maps(self, mapping, message):
        with (streamcore.Engine(channels=4, sink="manual") as engine,
              pytest.raises((TypeError, ValueError), match=message)):
            engine.stream(channels=mapping)

    def test_the_array_must_have_one_channel_per_entry(self):
        with (streamcore.Engine(channels=4, sink="manual") as engine,
              pytest.raises(ValueError, match="maps 3")):
            engine.play(_noise(64), channels=[0, 1, 2])

    def test_no_pan_on_a_mapped_voice(self):
        with streamcore.Engine(channels=2, sink="manual") as engine:  # a stereo engine pans
            with pytest.raises(ValueError, match="pan must be 0"):
                engine.play(_noise(64), channels=[1, 0], pan=0.5)
            voice = engine.play(_noise(64), channels=[1, 0])  # left and right swapped
            with pytest.raises(ValueError, match="pan must be 0"):
                voice.set(pan=-1)

    def test_without_a_map_other_layouts_are_refused_and_say_so(self):
        with (streamcore.Engine(channels=4, sink="manual") as engine,
              pytest.raises(ValueError, match="channels=")):
            engine.play(_noise(64))  # a stereo array on a 4-channel engine
