"""Producer functions for ``Engine.stream(producer=...)`` tests: module level, so that the
producer process (multiprocessing's "spawn") imports them by name."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from streamcore.errors import PeerGoneError


def pattern(start: int, count: int, channels: int) -> np.ndarray:
    """Frames start .. start+count of a pattern no silence or offset can fake: frame k is
    ((k % 1999) + 1) / 2048 on channel 0, its negative on channel 1, and so on."""
    k = np.arange(start, start + count)
    column = (((k % 1999) + 1) / 2048).astype(np.float32)
    signs = np.array([(-1) ** c for c in range(channels)], np.float32)
    return column[:, None] * signs[None, :]


def finite(stream, total: int, chunk: int = 512) -> None:
    """Write ``total`` frames of the pattern, then return (the voice then finishes)."""
    done = 0
    while done < total:
        n = min(chunk, total - done)
        assert stream.write(pattern(done, n, stream.channels)) == n
        done += n


def forever(stream, report: str | None = None, chunk: int = 512) -> None:
    """Write the pattern until a write raises PeerGoneError; then write what it said (and
    when) to ``report`` as JSON and let it end the process."""
    done = 0
    with open(report + ".pid", "w") if report else open(os.devnull, "w") as f:
        f.write(str(os.getpid()))
    try:
        while True:
            done += stream.write(pattern(done, chunk, stream.channels))
    except PeerGoneError as e:
        if report:
            with open(report + ".tmp", "w") as f:
                json.dump({"state": e.state, "side": e.side, "pid": e.pid,
                           "message": str(e), "monotonic": time.monotonic(),
                           "written": done}, f)
            os.replace(report + ".tmp", report)
        raise


def fails(stream, after: int) -> None:
    """Write ``after`` frames, then raise: the process exits 1 without closing the ring."""
    finite(stream, after)
    raise RuntimeError("this producer fails on purpose")


def tone(stream, seconds: float, frequency: float = 440.0, chunk: int = 1024) -> None:
    """A sine for ``seconds``, computed chunk by chunk as a real producer would."""
    total = int(seconds * stream.samplerate)
    phase = 0
    while phase < total:
        n = min(chunk, total - phase)
        t = (phase + np.arange(n)) / stream.samplerate
        block = (0.2 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
        stream.write(np.repeat(block[:, None], stream.channels, axis=1))
        phase += n
