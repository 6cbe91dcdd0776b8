"""streamcore.latency: the MLS and finding it in a recording (pure numpy, on data)."""

from __future__ import annotations

import numpy as np
import pytest

from streamcore.latency import MIN_CONFIDENCE, Latency, find_delay, mls, order_for


@pytest.mark.parametrize("order", range(10, 19))
def test_mls_is_a_maximum_length_sequence(order):
    """Its periodic autocorrelation is N*a^2 at 0 and -a^2 everywhere else: only a
    primitive polynomial gives that (a wrong tap gives a shorter period)."""
    s = mls(order).astype(np.float64)
    assert s.shape == ((1 << order) - 1,) and set(np.unique(s)) == {-0.5, 0.5}
    spectrum = np.fft.fft(s)
    auto = np.fft.ifft(spectrum * np.conj(spectrum)).real
    assert auto[0] == pytest.approx(s.size * 0.25)
    assert np.allclose(auto[1:], -0.25)


def test_order_for_fits_the_frames():
    assert order_for(48000) == 15 and (1 << 15) - 1 <= 48000
    assert order_for(10) == 10 and order_for(10**9) == 18


def test_mls_refuses_unknown_orders():
    with pytest.raises(ValueError, match=r"order must be within 10\.\.18"):
        mls(9)


class TestFindDelay:
    def test_an_exact_delay_on_the_right_channel(self):
        s = mls(12)
        rec = np.zeros((s.size + 3000, 3), np.float32)
        rec[777:777 + s.size, 2] = s
        lag, fraction, confidence, channel = find_delay(rec, s, 3000)
        assert (lag, fraction, channel) == (777, 0.0, 2) and confidence > 100

    def test_a_half_frame_delay_has_a_fraction(self):
        s = mls(12).astype(np.float64)
        # delayed by 100.5 frames: the average of the two neighbours (a linear interpolator)
        rec = np.zeros(s.size + 400)
        rec[100:100 + s.size] += 0.5 * s
        rec[101:101 + s.size] += 0.5 * s
        lag, fraction, _confidence, _channel = find_delay(rec, s.astype(np.float32), 400)
        assert lag + fraction == pytest.approx(100.5, abs=0.01)

    def test_noise_alone_is_not_found(self):
        s = mls(12)
        rec = np.random.default_rng(3).normal(0, 0.3, (s.size + 2000, 2))
        assert find_delay(rec, s, 2000)[2] < MIN_CONFIDENCE

    def test_a_short_recording_is_refused(self):
        s = mls(10)
        with pytest.raises(ValueError, match="needs"):
            find_delay(np.zeros((s.size, 1)), s, 10)


def test_latency_in_ms():
    latency = Latency(frames=256, fraction=0.5, samplerate=48000, reported_frames=None,
                      confidence=500.0, input_channel=0)
    assert latency.ms == pytest.approx(1e3 * 256.5 / 48000)
    assert "host reports unknown" in str(latency)
