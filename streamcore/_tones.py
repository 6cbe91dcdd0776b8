"""Small synthesised sounds for the `demo` and `stats` commands (nothing is downloaded)."""

from __future__ import annotations

import numpy as _np

__all__ = ["hat", "kick", "pluck", "song", "tone"]


def tone(freq: float, seconds: float, samplerate: int, level: float = 0.2) -> _np.ndarray:
    """A sine of ``freq`` Hz, float32 mono, with 5 ms ramps at both ends (no clicks)."""
    n = max(1, round(seconds * samplerate))
    t = _np.arange(n, dtype=_np.float64) / samplerate
    wave = level * _np.sin(2 * _np.pi * freq * t)
    ramp = min(n // 2, round(0.005 * samplerate))
    if ramp:
        edge = _np.linspace(0.0, 1.0, ramp)
        wave[:ramp] *= edge
        wave[-ramp:] *= edge[::-1]
    out: _np.ndarray = _np.asarray(wave, dtype=_np.float32)
    return out


def pluck(freq: float, seconds: float, samplerate: int, level: float = 0.25) -> _np.ndarray:
    """A decaying tone with two harmonics (a plucked-string colour), float32 mono."""
    n = round(seconds * samplerate)
    t = _np.arange(n, dtype=_np.float64) / samplerate
    body = _np.sin(2 * _np.pi * freq * t) + 0.3 * _np.sin(4 * _np.pi * freq * t)
    envelope = _np.exp(-t * 6.0) * _np.minimum(1.0, t * 400.0)
    return _np.asarray(level * body * envelope / 1.3, dtype=_np.float32)


def kick(samplerate: int, level: float = 0.6) -> _np.ndarray:
    """A bass drum: a sine sweeping 120 -> 45 Hz with a fast decay, float32 mono."""
    n = round(0.25 * samplerate)
    t = _np.arange(n, dtype=_np.float64) / samplerate
    freq = 45.0 + 75.0 * _np.exp(-t * 30.0)
    phase = 2 * _np.pi * _np.cumsum(freq) / samplerate
    return _np.asarray(level * _np.sin(phase) * _np.exp(-t * 12.0), dtype=_np.float32)


def hat(samplerate: int, level: float = 0.12, seed: int = 7) -> _np.ndarray:
    """A closed hi-hat: high-passed noise with a 30 ms decay, float32 mono."""
    n = round(0.05 * samplerate)
    noise = _np.random.default_rng(seed).uniform(-1.0, 1.0, n + 1)
    bright = _np.diff(noise)  # a first difference: most energy above a few kHz
    t = _np.arange(n, dtype=_np.float64) / samplerate
    return _np.asarray(level * bright * _np.exp(-t / 0.012), dtype=_np.float32)


def song(samplerate: int, bars: int = 1, bpm: float = 120.0) -> list[tuple[int, _np.ndarray]]:
    """One bar per ``bars`` of a little pattern as (start frame, mono float32 sound) pairs:
    an arpeggio in sixteenths, a kick on every beat, a hi-hat on every eighth.  Start frames
    are exact multiples of the sixteenth (sample-accurate when each is a voice's ``at``)."""
    step = round(samplerate * 60.0 / bpm / 4)  # one sixteenth, in frames
    notes = [261.63, 329.63, 392.00, 523.25, 392.00, 329.63, 440.00, 349.23]
    drum, cymbal = kick(samplerate), hat(samplerate)
    plucks = {f: pluck(f, 0.4, samplerate) for f in set(notes)}
    events: list[tuple[int, _np.ndarray]] = []
    for bar in range(bars):
        base = bar * 16 * step
        for i in range(16):
            at = base + i * step
            events.append((at, plucks[notes[(i + bar) % len(notes)]]))
            if i % 4 == 0:
                events.append((at, drum))
            if i % 2 == 0:
                events.append((at, cymbal))
    return events
