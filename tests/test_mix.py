"""Golden mixes on the real mix kernel, clocked by hand (sink='manual'): exact samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamcore import Engine
from streamcore.errors import (
    CommandQueueFullError,
    EngineClosedError,
    StreamcoreError,
    VoiceLimitError,
)
from streamcore.voice import pan_gains

N = 64  # blocksize of these tests


def manual(**kw) -> Engine:
    kw.setdefault("blocksize", N)
    return Engine(sink="manual", **kw)


def noise(frames, channels=2, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    shape = (frames,) if channels == 1 else (frames, channels)
    return (rng.standard_normal(shape) * scale).astype(np.float32)


class TestGolden:
    """Voices sum to the exact expected samples (float32 tolerance: rtol 1e-6)."""

    def test_passthrough_is_bit_exact(self):
        """Engine channels, gain 1.0, pan 0.0: float32 output identical to the input."""
        data = noise(N * 5 + 17)
        with manual() as e:
            e.play(data)
            out = e.render(6)
        assert out[: len(data)].tobytes() == data.tobytes()
        assert not out[len(data):].any()

    def test_two_voices_with_gain_and_pan(self):
        a, b = noise(N * 4, seed=1), noise(N * 4, channels=1, seed=2)
        with manual() as e:
            e.play(a, gain=0.5, pan=0.25)
            e.play(b, gain=0.8, pan=-0.5)
            out = e.render(4)
        ga = np.float32(pan_gains(0.5, 0.25, 2, 2))
        gb = np.float32(pan_gains(0.8, -0.5, 1, 2))
        expected = a * ga + b[:, None] * gb
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)

    def test_pan_laws(self):
        """Balance for stereo voices, constant power (-3 dB centre) for mono voices."""
        assert pan_gains(1.0, 0.0, 2, 2) == [1.0, 1.0]
        assert pan_gains(1.0, 0.5, 2, 2) == [0.5, 1.0]
        left, right = pan_gains(1.0, 0.0, 1, 2)
        assert left == pytest.approx(math.sqrt(0.5)) and right == pytest.approx(math.sqrt(0.5))
        one = np.ones(N, dtype=np.float32)
        with manual() as e:
            e.play(one, pan=-1.0)
            out = e.render(1)
        np.testing.assert_allclose(out[:, 0], 1.0, rtol=1e-6)
        np.testing.assert_allclose(out[:, 1], 0.0, atol=1e-7)

    def test_mono_engine_and_multichannel(self):
        data = noise(N * 2, channels=4, seed=3)
        mono = noise(N * 2, channels=1, seed=4)
        with manual(channels=4) as e:
            e.play(data, gain=0.25)
            e.play(mono, gain=2.0)
            out = e.render(2)
        np.testing.assert_allclose(out, data * np.float32(0.25) + mono[:, None] * 2, rtol=1e-6)

    def test_loop_repeats_the_buffer(self):
        data = noise(37, seed=5)
        with manual() as e:
            v = e.play(data, loop=True)
            out = e.render(4)
            assert not v.done
        assert np.array_equal(out, np.tile(data, (math.ceil(4 * N / 37), 1))[: 4 * N])

    def test_one_shot_is_handed_back_when_finished(self):
        data = noise(N + 5, seed=6)
        with manual() as e:
            v = e.play(data)
            e.render(1)
            assert not v.done
            e.render(1)
            assert v.done and v.end_reason == "finished" and v.frames_played == N + 5
            assert v._source is None  # the array is released
            assert e.stats().voices == 0


class TestRamps:
    """Gain and pan changes ramp linearly over exactly one block; fades bound every step."""

    def test_gain_change_ramps_over_one_block(self):
        one = np.ones((N * 10, 2), dtype=np.float32)
        with manual() as e:
            v = e.play(one)
            first = e.render(1)
            v.gain = 0.5
            ramp = e.render(1)
            after = e.render(1)
        assert (first == 1.0).all()
        expected = 1.0 + (0.5 - 1.0) * (np.arange(1, N + 1, dtype=np.float32) / N)
        np.testing.assert_allclose(ramp[:, 0], expected, rtol=1e-6)
        assert ramp[-1, 0] == 0.5 and (after == 0.5).all()
        assert np.all(np.diff(ramp[:, 0]) < 0)  # strictly monotonic: no step back

    def test_pan_change_ramps_over_one_block(self):
        one = np.ones((N * 10, 2), dtype=np.float32)
        with manual() as e:
            v = e.play(one)
            e.render(1)
            v.pan = 1.0
            ramp = e.render(1)
            after = e.render(1)
        assert (ramp[:, 1] == 1.0).all()
        np.testing.assert_allclose(ramp[:, 0], 1.0 - np.arange(1, N + 1) / N, atol=1e-6)
        assert (after[:, 0] == 0.0).all()

    def test_stop_fades_with_bounded_steps(self):
        one = np.ones((N * 20, 2), dtype=np.float32)
        fade_frames = 100
        with manual(samplerate=48000) as e:
            v = e.play(one)
            e.render(1)
            v.stop(fade=fade_frames / 48000)
            out = e.render(3)
            assert v.done and v.end_reason == "stopped"
        x = np.concatenate([[1.0], out[:, 0]])
        steps = np.abs(np.diff(x))
        assert steps.max() <= 1.0 / fade_frames + 1e-6
        assert x[fade_frames] == 0.0 and not x[fade_frames:].any()

    def test_fade_in_bounds_the_first_step(self):
        one = np.ones(N * 4, dtype=np.float32)
        with manual(channels=1) as e:
            e.play(one, fade_in=50 / 48000)
            out = e.render(2)[:, 0]
        assert out[0] == pytest.approx(1 / 50) and out[49] == 1.0
        assert np.abs(np.diff(np.concatenate([[0.0], out]))).max() <= 1 / 50 + 1e-6

    def test_stop_without_fade_ends_at_the_period(self):
        with manual() as e:
            v = e.play(np.ones((N * 4, 2), dtype=np.float32))
            v.stop(fade=0)
            out = e.render(1)
        assert v.done and not out.any()


class TestStart:
    """A voice scheduled at frame F starts at frame F of the output."""

    @pytest.mark.parametrize("start", [0, 1, N - 1, N, N + 3, 3 * N + 7])
    def test_sample_accurate_start(self, start):
        data = noise(N, seed=7)
        with manual() as e:
            e.play(data, at=start)
            out = e.render(6)
        assert not out[:start].any()
        assert np.array_equal(out[start:start + N], data)
        assert not out[start + N:].any()

    def test_start_in_the_past_plays_now_and_is_counted(self):
        data = noise(N, seed=8)
        with manual() as e:
            e.render(2)
            e.play(data, at=10)
            out = e.render(1)
            assert e.stats().late_starts == 1
        assert np.array_equal(out, data)


class TestGuards:
    """NaN/Inf silence that voice's block and are counted; clipping is counted."""

    def test_nonfinite_block_is_silenced_and_counted(self):
        bad = np.ones((N * 3, 2), dtype=np.float32)
        bad[N + 5, 1] = np.nan
        bad[2 * N + 1, 0] = np.inf
        good = noise(N * 3, seed=9)
        with manual() as e:
            v = e.play(bad, gain=0.5)
            e.play(good)
            out = e.render(3)
            assert v.stats()["nans"] == 2
            assert e.stats().nans == 2
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out[:N], good[:N] + 0.5, rtol=1e-6)
        assert np.array_equal(out[N:], good[N:])

    @pytest.mark.parametrize("dtype,scale,top", [("int16", 32768, 32767),
                                                 ("int32", 2**31, 2**31 - 1)])
    def test_integer_output_and_clipping(self, dtype, scale, top):
        values = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -2.0, 0.25], dtype=np.float32)
        data = np.repeat(values, N // len(values)).astype(np.float32)
        with manual(channels=1, dtype=dtype) as e:
            e.play(data)
            out = e.render(1)[:, 0]
            stats = e.stats()
        assert out.dtype == np.dtype(dtype)
        expected = np.clip(np.round(data.astype(np.float64) * scale), -scale, top)
        assert np.array_equal(out, expected.astype(dtype))
        assert stats.clips == 2 * (N // len(values))
        assert "CLIPPED" in stats.taints and not stats.clean

    def test_float_output_counts_clips_without_changing_samples(self):
        data = np.full(N, 1.5, dtype=np.float32)
        with manual(channels=1) as e:
            e.play(data)
            out = e.render(1)
            assert e.stats().clips == N
        assert (out == 1.5).all()


class TestErrors:
    """Bad input raises a clear error and leaves the engine as it was."""

    @pytest.mark.parametrize("kw,exc", [
        ({"samplerate": 1000}, ValueError), ({"samplerate": 48000.0}, TypeError),
        ({"blocksize": 8}, ValueError), ({"blocksize": 100000}, ValueError),
        ({"channels": 0}, ValueError), ({"periods": 1}, ValueError),
        ({"dtype": "float64"}, TypeError), ({"sink": "tape"}, ValueError),
    ])
    def test_bad_engine_arguments(self, kw, exc):
        with pytest.raises(exc):
            Engine(**kw)

    @pytest.mark.parametrize("array,exc", [
        ([0.0, 1.0], TypeError),
        (np.zeros(10, dtype=np.float64), TypeError),
        (np.zeros((10, 3), dtype=np.float32), ValueError),
        (np.zeros((2, 10, 2), dtype=np.float32), ValueError),
        (np.zeros((0, 2), dtype=np.float32), ValueError),
        (np.zeros((10, 4), dtype=np.float32)[:, ::2], ValueError),
    ])
    def test_bad_arrays(self, array, exc):
        with manual() as e:
            with pytest.raises(exc):
                e.play(array)
            assert e.voices == [] and e._table.free_slots == 256

    @pytest.mark.parametrize("kw", [{"gain": float("nan")}, {"pan": 1.5}, {"at": -1},
                                    {"fade_in": -1.0}])
    def test_bad_voice_arguments(self, kw):
        with manual() as e:
            with pytest.raises(ValueError):
                e.play(np.zeros(10, dtype=np.float32), **kw)
            assert e.voices == []

    def test_pan_needs_stereo(self):
        with manual(channels=1) as e, pytest.raises(ValueError, match="stereo"):
            e.play(np.zeros(10, dtype=np.float32), pan=0.5)

    def test_voice_limit_is_an_error(self):
        data = np.zeros(N, dtype=np.float32)
        with manual() as e:
            voices = [e.play(data, loop=True) for _ in range(256)]
            with pytest.raises(VoiceLimitError):
                e.play(data)
            e.render(1)
            assert e.stats().voices == 256
            voices[0].stop(fade=0)
            e.render(1)
            assert voices[0].done
            e.play(data)  # the freed slot is usable again

    def test_closed_engine(self):
        e = manual()
        e.close()
        e.close()  # idempotent
        with pytest.raises(EngineClosedError):
            e.play(np.zeros(10, dtype=np.float32))
        assert isinstance(EngineClosedError("x"), StreamcoreError)

    def test_command_queue_full_is_an_error(self):
        with manual() as e:
            v = e.play(np.zeros(N, dtype=np.float32), loop=True)
            with pytest.raises(CommandQueueFullError):
                for _ in range(2000):
                    v.gain = 0.5
            e.render(1)
            v.gain = 0.25  # drained: room again

    def test_close_hands_voices_back(self):
        data = np.zeros(N, dtype=np.float32)
        e = manual()
        v = e.play(data, loop=True)
        e.close()
        assert v.done and v.end_reason == "flushed"


class TestStreamVoice:
    """A stream voice plays its ring; an underrun is silence, counted, then the data resumes
    in order."""

    def test_underrun_then_refill(self):
        data = noise(N * 5, seed=10, scale=0.2)
        with manual() as e:
            v = e.stream(channels=2, frames=1024)
            assert v.write(data[: N + 10]) == N + 10
            first = e.render(3)          # N + 10 frames, then a gap
            assert v.stats()["underruns"] == 2 and v.stats()["underrun_frames"] == 2 * N - 10
            assert v.write(data[N + 10:]) == 4 * N - 10
            second = e.render(3)
            assert e.stats().underruns == 2
        assert np.array_equal(first[: N + 10], data[: N + 10])
        assert not first[N + 10:].any()                       # silence during the gap
        assert np.array_equal(second, data[N + 10: N + 10 + 3 * N])  # continues in order

    def test_mono_stream_with_pan(self):
        data = noise(N * 2, channels=1, seed=11)
        with manual() as e:
            v = e.stream(channels=1)
            v.write(data[:, None])
            out = e.render(2)
        g = np.float32(pan_gains(1.0, 0.0, 1, 2))
        np.testing.assert_allclose(out, data[:, None] * g, rtol=1e-6)

    def test_nothing_written_yet_is_not_an_underrun(self):
        with manual() as e:
            v = e.stream(channels=2)
            e.render(4)
            assert v.stats()["underruns"] == 0

    def test_ring_written_by_another_process(self):
        import os

        from streamcore import Ring

        data = noise(N * 3, seed=13)
        with manual() as e, Ring(1024, 2, "float32", lock=False) as ring:
            e.stream(ring=ring)
            pid = os.fork()
            if pid == 0:  # the writer: attaches by fd, as a separate program would
                status = 1
                try:
                    with Ring.attach(ring.fd, lock=False) as mine:
                        status = 0 if mine.write(data) == len(data) else 2
                finally:
                    os._exit(status)
            _, status = os.waitpid(pid, 0)
            assert status == 0
            out = e.render(3)
        assert np.array_equal(out, data)

    def test_ring_from_elsewhere(self):
        from streamcore import Ring

        data = noise(N, seed=12)
        ring = Ring(512, 2, "float32", lock=False)
        attached = Ring.attach(ring.fd, lock=False)  # as another process would
        with manual() as e:
            e.stream(ring=attached)
            ring.write(data)
            out = e.render(1)
        assert np.array_equal(out, data)
        with manual() as e, pytest.raises(TypeError):
            e.stream(ring=Ring(64, 2, "int16", lock=False))
        ring.close()
        attached.close()


class TestDither:
    """int16 TPDF dither: ±1 LSB of triangular noise, so levels below 1 LSB survive on average."""

    def test_sub_lsb_level_survives_on_average(self):
        level = 0.3 / 32768  # 0.3 LSB: rounds to 0 without dither
        data = np.full(N * 200, level, dtype=np.float32)
        with manual(channels=1, dtype="int16") as e:
            e.play(data)
            plain = e.render(200)[:, 0]
        with manual(channels=1, dtype="int16", dither=True) as e:
            e.play(data)
            dithered = e.render(200)[:, 0]
        assert not plain.any()
        assert set(np.unique(dithered)) <= {-1, 0, 1}
        assert abs(dithered.mean() - 0.3) < 0.05

    def test_dither_is_for_int16(self):
        with pytest.raises(ValueError):
            Engine(sink="manual", dither=True)
