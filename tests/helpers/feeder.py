"""A JACK client that plays a known float32 sequence into other clients' input ports.

Every frame the feeder ever played is known from its index k alone (:func:`ramp`): channel c
holds (-1)**c * k / 2**24, exact in float32 up to k = 2**24 (5.8 minutes at 48 kHz), so a
recording can be checked bit-exact and its position in the feeder's stream read off any
frame.  Each process cycle is logged (CLOCK_MONOTONIC ns, first k), which lets a test match
the feeder's cycles with the device sink's callbacks (DeviceSink.timestamps()) and predict
the input frame that each feeder frame becomes.
"""

from __future__ import annotations

import time

import jack
import numpy as np

SCALE = float(1 << 24)


def ramp(first: int, frames: int, channels: int) -> np.ndarray:
    """The feeder's frames first .. first + frames - 1 as a (frames, channels) array."""
    k = np.arange(first, first + frames, dtype=np.float64) / SCALE
    return np.stack([k if c % 2 == 0 else -k for c in range(channels)], axis=1).astype(
        np.float32)


def position(frame: np.ndarray) -> int:
    """The feeder index k of one recorded frame (its first channel)."""
    return round(float(frame[0]) * SCALE)


class Feeder:
    """``channels`` output ports playing :func:`ramp` from k = 0, from activation on."""

    def __init__(self, server: str | None, channels: int = 2, name: str = "feeder") -> None:
        self.client = jack.Client(name, servername=server, no_start_server=True)
        self.ports = [self.client.outports.register(f"out_{c}") for c in range(channels)]
        self.channels = channels
        self.k = 0
        self.log: list[tuple[int, int]] = []  # (monotonic ns at the cycle's start, first k)
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        self.log.append((time.monotonic_ns(), self.k))
        block = ramp(self.k, frames, self.channels)
        for c, port in enumerate(self.ports):
            port.get_array()[:] = block[:, c]
        self.k += frames

    def feed(self, client: str) -> list[str]:
        """Connect to ``client``'s input ports (in order), cutting whatever fed them."""
        targets = sorted(p.name for p in self.client.get_ports(
            f"{client}:", is_input=True, is_audio=True))
        for target in targets:
            for source in self.client.get_all_connections(target):
                self.client.disconnect(source.name, target)
        for port, target in zip(self.ports, targets, strict=False):
            self.client.connect(port.name, target)
        return targets

    def offset(self, timestamps: np.ndarray, period: int) -> set[int]:
        """input frame - feeder k, for each device callback matched to the feeder cycle that
        ran in the same server cycle (the closest one before it, less than a period of time
        earlier).  One value when the feed is exact."""
        log = list(self.log)
        starts = np.array([ns for ns, _ in log], dtype=np.int64)
        cycle_ns = period * 1_000_000_000 // 48000
        found = set()
        for record in timestamps:
            i = int(np.searchsorted(starts, record["callback_ns"], side="right")) - 1
            if i < 0 or record["callback_ns"] - starts[i] >= cycle_ns // 2:
                continue
            found.add(int(record["input_frame"]) - log[i][1])
        return found

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()
