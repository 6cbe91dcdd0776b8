"""Round-trip latency, measured: the signal, and finding it again in a recording.

``Engine.measure_latency()`` plays a maximum length sequence (MLS) on every output channel
and records the inputs; :func:`find_delay` cross-correlates each input channel with the
sequence and takes the strongest peak.  An MLS (a binary pseudo-random sequence of length
2**order - 1 from a linear feedback shift register with a primitive polynomial) has a
flat spectrum and a single sharp correlation peak: through a digital loopback the peak is
exact to the frame and its height over the rest of the correlation (``confidence``) is in
the hundreds; a cable adds the converters' filters (a sub-frame part, from a parabola through
the peak and its neighbours) and noise.  Pure numpy; the engine does the playing and
recording.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MIN_CONFIDENCE", "Latency", "find_delay", "mls"]

#: Below this peak-to-noise ratio the signal was not found: no loopback.
MIN_CONFIDENCE = 8.0

# Taps (1-based, Fibonacci form) of primitive polynomials, one per order.
_TAPS = {10: (10, 7), 11: (11, 9), 12: (12, 11, 10, 4), 13: (13, 12, 11, 8),
         14: (14, 13, 12, 2), 15: (15, 14), 16: (16, 15, 13, 4), 17: (17, 14),
         18: (18, 11)}
MIN_ORDER, MAX_ORDER = min(_TAPS), max(_TAPS)


def mls(order: int, amplitude: float = 0.5) -> np.ndarray:
    """The maximum length sequence of ``order`` (10 .. 18): 2**order - 1 samples of
    +-``amplitude``, float32.

    Parameters
    ----------
    order : int
        The shift register's length.
    amplitude : float
        The samples' magnitude.

    Returns
    -------
    numpy.ndarray
        float32, shape (2**order - 1,).

    Raises
    ------
    ValueError
        ``order`` has no polynomial here.
    """
    if order not in _TAPS:
        raise ValueError(f"order must be within {MIN_ORDER}..{MAX_ORDER}, not {order!r}")
    taps = [t - 1 for t in _TAPS[order]]
    state = np.ones(order, dtype=np.uint8)
    length = (1 << order) - 1
    bits = np.empty(length, dtype=np.uint8)
    for i in range(length):
        bits[i] = state[-1]
        feedback = np.bitwise_xor.reduce(state[taps])
        state[1:] = state[:-1]
        state[0] = feedback
    return np.where(bits == 1, amplitude, -amplitude).astype(np.float32)


def order_for(frames: int) -> int:
    """The largest MLS order whose sequence fits in ``frames`` (clamped to 10 .. 18)."""
    order = max(MIN_ORDER, min(MAX_ORDER, int(frames + 1).bit_length() - 1))
    return order


@dataclass(frozen=True)
class Latency:
    """A measured round trip (``Engine.measure_latency()``).

    Parameters
    ----------
    frames : int
        The round trip, exact to the frame: the input frame at which an output frame came
        back, minus the input frame that left the device with it.
    fraction : float
        The sub-frame part (-0.5 .. 0.5; 0 through a digital loopback).
    samplerate : int
        Hz, for :attr:`ms`.
    reported_frames : int or None
        What the host claims for the same trip (output plus input latency), for comparison.
    confidence : float
        The correlation peak over the rest's RMS: hundreds through a digital loopback;
        under :data:`MIN_CONFIDENCE` the measurement raises instead.
    input_channel : int
        The input channel the signal was found on.
    """

    frames: int
    fraction: float
    samplerate: int
    reported_frames: int | None
    confidence: float
    input_channel: int

    @property
    def ms(self) -> float:
        """The round trip in milliseconds (sub-frame part included)."""
        return 1e3 * (self.frames + self.fraction) / self.samplerate

    def __str__(self) -> str:
        reported = ("unknown" if self.reported_frames is None
                    else f"{self.reported_frames} frames")
        return (f"round trip {self.frames} frames ({self.ms:.3f} ms), host reports "
                f"{reported}, confidence {self.confidence:.0f}")


def find_delay(recording: np.ndarray, signal: np.ndarray, max_lag: int
               ) -> tuple[int, float, float, int]:
    """Where ``signal`` starts in ``recording``: (lag, fraction, confidence, channel).

    Parameters
    ----------
    recording : numpy.ndarray
        (frames, channels), at least ``len(signal) + max_lag`` frames.
    signal : numpy.ndarray
        1-D, what was played.
    max_lag : int
        The largest lag searched (>= 0).

    Returns
    -------
    tuple
        The lag in frames of the strongest peak over all channels, its sub-frame part
        (parabolic interpolation), its confidence (peak over the RMS of the correlation
        away from the peak) and the channel.

    Raises
    ------
    ValueError
        The recording is shorter than ``len(signal) + max_lag`` or ``max_lag`` < 0.
    """
    recording = np.asarray(recording, dtype=np.float64)
    if recording.ndim == 1:
        recording = recording[:, None]
    n = signal.shape[0]
    if max_lag < 0 or recording.shape[0] < n + max_lag:
        raise ValueError(f"the recording holds {recording.shape[0]} frames; the search "
                         f"needs {n} + {max_lag}")
    size = 1 << int(n + max_lag + n).bit_length()
    reference = np.conj(np.fft.rfft(signal.astype(np.float64), size))
    best = (0, 0.0, 0.0, 0)
    for channel in range(recording.shape[1]):
        spectrum = np.fft.rfft(recording[: n + max_lag, channel], size)
        corr = np.fft.irfft(spectrum * reference, size)[: max_lag + 1]
        magnitude = np.abs(corr)
        lag = int(np.argmax(magnitude))
        peak = float(magnitude[lag])
        rest = np.delete(magnitude, range(max(0, lag - 2), min(magnitude.size, lag + 3)))
        noise = float(np.sqrt(np.mean(rest ** 2))) if rest.size else 0.0
        confidence = peak / noise if noise > 0 else (float("inf") if peak > 0 else 0.0)
        fraction = 0.0
        if 0 < lag < max_lag:
            a, b, c = magnitude[lag - 1], magnitude[lag], magnitude[lag + 1]
            denominator = a - 2 * b + c
            if denominator != 0:
                # to 1e-4 frame: beyond that it is the FFT's rounding, not the signal
                fraction = round(float(np.clip(0.5 * (a - c) / denominator, -0.5, 0.5)), 4)
                fraction = fraction or 0.0  # no -0.0
        if confidence > best[2]:
            best = (lag, fraction, confidence, channel)
    return best
