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
