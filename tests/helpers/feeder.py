"""A JACK client that plays a known float32 sequence into other clients' input ports.

Every frame the feeder plays is known from its index k alone (:func:`ramp`): channel c holds
(-1)**c * (k mod 2**24) / 2**24, exact in float32, so a recording can be checked bit-exact
and its position read off any frame.  k is the server's own frame clock (the cycle's
``last_frame_time`` plus the frame's place in it), not a count of the feeder's calls: a
cycle the feeder misses (its Python callback late: a server xrun) spoils that cycle only,
never the position of what follows.  Each process cycle is logged (CLOCK_MONOTONIC ns, k of
its first frame), which lets a test match the feeder's cycles with the device sink's
callbacks (DeviceSink.timestamps()) and predict the input frame each feeder frame becomes.
"""

from __future__ import annotations

import threading
import time

import jack
import numpy as np

SCALE = float(1 << 24)


def ramp(first: int, frames: int, channels: int) -> np.ndarray:
    """The feeder's frames first .. first + frames - 1 as a (frames, channels) array."""
    k = (np.arange(first, first + frames, dtype=np.int64) % (1 << 24)).astype(np.float64) / SCALE
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
        self.log: list[tuple[int, int]] = []  # (monotonic ns at the cycle's start, first k)
        self._closing = False
        self._quiet = threading.Event()  # a cycle began after close() did: none is in libjack
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames: int) -> None:
        if self._closing:
            self._quiet.set()
            return
        k = self.client.last_frame_time
        self.log.append((time.monotonic_ns(), k))
        block = ramp(k, frames, self.channels)
        for c, port in enumerate(self.ports):
            port.get_array()[:] = block[:, c]

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

    def offset(self, timestamps: np.ndarray, period: int, since_ns: int = 0) -> set[int]:
        """input frame - feeder k, for each device callback (after ``since_ns``) matched to
        the feeder cycle that ran in the same server cycle (the closest one before it, less
        than half a period earlier).  One value when the feed is exact."""
        log = list(self.log)
        starts = np.array([ns for ns, _ in log], dtype=np.int64)
        cycle_ns = period * 1_000_000_000 // 48000
        found = set()
        for record in timestamps[timestamps["callback_ns"] > since_ns]:
            i = int(np.searchsorted(starts, record["callback_ns"], side="right")) - 1
            if i < 0 or record["callback_ns"] - starts[i] >= cycle_ns // 2:
                continue
            found.add(int(record["input_frame"]) - log[i][1])
        return found

    def close(self) -> None:
        """Deactivate and close, once no process callback is inside libjack: pipewire-jack's
        deactivate waits for the process thread while holding what the callback's
        jack_last_frame_time needs (a CI child hung there 85 s)."""
        self._closing = True
        self._quiet.wait(1.0)  # callbacks run one at a time: a new one means the old one ended
        self.client.deactivate()
        self.client.close()


def loop_back(linker: jack.Client, client: str) -> list[tuple[str, str]]:
    """Connect ``client``'s output ports to its own input ports, in order, cutting whatever
    fed the inputs (a digital loopback on JACK2); returns the (output, input) pairs."""
    outs = sorted(p.name for p in linker.get_ports(f"{client}:", is_output=True, is_audio=True))
    ins = sorted(p.name for p in linker.get_ports(f"{client}:", is_input=True, is_audio=True))
    for port in ins:
        for source in linker.get_all_connections(port):
            linker.disconnect(source.name, port)
    pairs = list(zip(outs, ins, strict=True))
    for out, port in pairs:
        linker.connect(out, port)
    return pairs
