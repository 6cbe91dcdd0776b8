"""One engine, thousands of stream voices: what a finished voice held is released when the
mixer hands it back, not when the engine closes (issue 13: EMFILE after a few thousand
voices, and rings that silently stopped being locked)."""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time

import numpy as np

from streamcore import Engine

VOICES = 5000
BATCH = 25  # voices alive at once: far below any fd or memlock limit


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_targets() -> dict[str, str]:
    """Each open fd and what it is (for the failure message)."""
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own fd is gone already
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return out


def maps() -> list[str]:
    with open("/proc/self/maps") as f:
        return f.read().splitlines()


def ring_mappings() -> int:
    """Mappings of streamcore rings (their memfds are named memfd:streamcore-ring:...)."""
    return sum("streamcore-ring" in line for line in maps())


def vmlck_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    raise AssertionError("no VmLck line in /proc/self/status")


def figures() -> tuple[int, int, int, int]:
    return open_fds(), ring_mappings(), len(maps()), vmlck_kib()


class TestFinishedVoicesReleaseTheirRings:
    """5000 stream voices, each written, stopped and handed back, on one running engine:
    open fds, mappings and locked memory come back to where they were."""

    def test_five_thousand_stream_voices(self):
        block = np.full((64, 2), 0.01, np.float32)
        with Engine(sink="null", blocksize=64, channels=2) as engine:

            def run(count: int) -> None:
                for first in range(0, count, BATCH):
                    voices = [engine.stream(channels=2) for _ in range(min(BATCH,
                                                                          count - first))]
                    for voice in voices:
                        assert voice.write(block) == 64
                        voice.stop(fade=0)
                    for voice in voices:
                        assert voice.wait(5.0), "a stopped voice was not handed back"


            # Warm-up: the first voices create what stays for the process's life (numpy's
            # and cffi's caches, Python's object arenas); the baseline is taken after them.
            run(2 * BATCH)
            # The engine's own lasting helpers start on first use: the voice-end watcher
            # (two eventfds) with the first wait() on a voice still playing.
            playing = engine.stream(channels=2)
            assert not playing.wait(0.01)
            playing.stop(fade=0)
            assert playing.wait(5.0)
            # Garbage of earlier tests (a pipe, a socket) closes its fd when collected: once
            # in CI during the run, 39 -> 38 fds.  Collect it before the baseline.
            gc.collect()
            before = figures()
            fds_before = fd_targets()
            started = time.monotonic()
            run(VOICES)
            elapsed = time.monotonic() - started
            after = figures()
            fds_after = fd_targets()
            threads = sorted(t.name for t in threading.enumerate())
            assert engine.voices == []
            stats = engine.stats()
        fds, rings, lines, locked = after
        new = {fd: what for fd, what in fds_after.items() if fds_before.get(fd) != what}
        gone = {fd: what for fd, what in fds_before.items() if fds_after.get(fd) != what}
        assert new == {} and fds <= before[0], (
            f"open fds {before[0]} -> {fds}: new {new}, gone {gone}; threads {threads}")
        assert rings == before[1], f"ring mappings {before[1]} -> {rings}"
        assert locked == before[3], f"VmLck {before[3]} kB -> {locked} kB"
        # Every other mapping is the allocators' (pymalloc arenas of 1 MiB, glibc's mmap'ed
        # chunks): they come and go with garbage that is not the engine's, so the total may
        # differ by a few lines; 5000 leaked voices would add 10000 ring lines.
        assert abs(lines - before[2]) <= 8, f"/proc/self/maps lines {before[2]} -> {lines}"
        assert stats.cycles > 0
        assert elapsed < 20, f"{VOICES} voices took {elapsed:.1f} s"
