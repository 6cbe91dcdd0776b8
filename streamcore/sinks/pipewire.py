"""PipeWire's missed cycles, which it tells no client: read from its profiler.

Under PipeWire a JACK client hears of no xrun (no xrun callback, PortAudio's underflow flag
stays 0) and the null or ALSA sink counts none, yet the graph misses cycles: a node that did
not finish in time.  PipeWire reports them only to a profiler client (module-profiler, loaded
by PipeWire's default configuration; what pw-top's ERR column counts).  :class:`ProfilerWatch`
runs ``pw-profiler`` (pipewire-bin) on the server this process reaches, reads the log it writes
and counts the cycles in which a node that had been running missed its cycle: the graph's
glitches, like a JACK server's xruns (whoever was late, everyone's output glitched).

A normal Python thread reads the log (the device sink's monitor); nothing here runs on an audio
thread.  PipeWire 0.3.65's profiler sends its data once a second, so counts lag by up to a
second.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from typing import Any

__all__ = ["FINISHED", "ProfilerCount", "ProfilerWatch", "profiler_cycle"]

FINISHED = 3           #: a follower's status in a cycle it finished in time
_DRIVER_COLUMNS = 4    # signal-to-signal, signal-to-finish, delay, period (us)
_FOLLOWER_COLUMNS = 8  # id, signal, awake, finish, wait, busy, status, 0


def profiler_cycle(line: str) -> tuple[tuple[float, ...], list[tuple[int, int]]] | None:
    """One line of pw-profiler's log as ``(driver, followers)``, or None for a line that is
    not a driver cycle.

    PipeWire 0.3.65's tab-separated format: one line per driver cycle; 4 driver columns
    (``driver``: signal-to-signal and signal-to-finish intervals, delay, period; microseconds,
    integers in 0.3.65, with 3 decimals in later versions; the first two read 1.4 x period
    when the cycle was late), then 8 columns per follower, blank when the follower was not in
    that cycle (``followers``: (node id, status), status :data:`FINISHED` when it finished
    in time)."""
    cols = line.rstrip("\n").split("\t")
    if len(cols) < _DRIVER_COLUMNS or not cols[0].strip():
        return None
    try:
        driver = tuple(float(c) for c in cols[:_DRIVER_COLUMNS])
        followers = [(int(cols[k]), int(float(cols[k + 6])))
                     for k in range(_DRIVER_COLUMNS, len(cols) - _FOLLOWER_COLUMNS + 1,
                                    _FOLLOWER_COLUMNS) if cols[k].strip()]
    except ValueError:
        return None
    return driver, followers


class ProfilerCount:
    """Counts what pw-profiler's log lines say, line by line (one line per driver cycle).

    A node's unfinished cycle counts once the node finishes a later one: a node joining (not
    finished yet) or leaving (never again) is not a glitch, as in pw-top."""

    def __init__(self) -> None:
        self.cycles = 0      #: driver cycles read
        self._running: set[int] = set()  # nodes seen finishing a cycle at least once
        self._pending: dict[int, list[int]] = {}  # node -> cycles it missed, unconfirmed
        self._missed: set[int] = set()  # cycles in which a running node missed

    @property
    def glitches(self) -> int:
        """Cycles in which a node that was running missed its cycle and ran on after."""
        return len(self._missed)

    def feed(self, line: str) -> None:
        """Count one log line (a driver cycle; other lines are ignored)."""
        cycle = profiler_cycle(line)
        if cycle is None:
            return
        for node, status in cycle[1]:
            if status == FINISHED:
                self._running.add(node)
                self._missed.update(self._pending.pop(node, ()))
            elif node in self._running:
                self._pending.setdefault(node, []).append(self.cycles)
        self.cycles += 1


class ProfilerWatch:
    """``pw-profiler`` on the PipeWire server this process's environment reaches.

    Raises
    ------
    OSError
        No ``pw-profiler`` (ENOENT), or it could not be started.

    Notes
    -----
    Made, read and closed by one normal Python thread at a time.  The log goes to a private
    temporary folder, removed by :meth:`close`.
    """

    def __init__(self) -> None:
        program = shutil.which("pw-profiler")
        if program is None:
            raise OSError(2, "pw-profiler not found (Debian: pipewire-bin)")
        self._folder = tempfile.mkdtemp(prefix="streamcore-pw-profiler-")
        self._log_path = os.path.join(self._folder, "profiler.log")
        self.count = ProfilerCount()
        self._partial = ""
        self._log: Any = None
        # its own session: a Ctrl-C meant for the application does not stop it first
        self._process = subprocess.Popen(
            [program, "-o", self._log_path], cwd=self._folder, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def poll(self) -> ProfilerCount:
        """Read what the profiler logged since the last call; the counts so far."""
        if self._log is None:
            try:
                self._log = open(self._log_path)  # noqa: SIM115 (kept open while it runs)
            except FileNotFoundError:
                return self.count
        text = self._partial + self._log.read()
        lines = text.split("\n")
        self._partial = lines.pop()  # a line still being written
        for line in lines:
            self.count.feed(line)
        return self.count

    @property
    def alive(self) -> bool:
        """Whether pw-profiler still runs (it exits when the server goes away)."""
        return self._process.poll() is None

    def close(self) -> None:
        """Stop pw-profiler by pid and remove its log (idempotent)."""
        if self._process.poll() is None:
            try:
                self._process.send_signal(signal.SIGINT)  # its way out
                self._process.wait(2)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(2)
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self._folder, ignore_errors=True)
