"""The load the benchmarks run under: a CPU hog on every core, plus, inside the measuring
process, a Python thread churning allocations and gc (it takes the GIL, touches fresh memory
and makes the allocator call into the kernel).

    with Load(enabled=True) as load:
        ...              # measure
    load.facts           # what ran, for the report

The hogs are separate processes at normal priority (SCHED_OTHER, nice 0): a realtime thread
preempts them, a Python callback competes with them.  Each hog is stopped by its pid.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
from typing import Any

_HOG = "while True: pass"


class Load:
    """CPU hogs (one per core) and an in-process allocation/gc churn thread while inside the
    ``with`` block; nothing when ``enabled`` is false."""

    def __init__(self, enabled: bool = True, hogs: int | None = None, churn: bool = True) -> None:
        self.enabled = enabled
        self.hogs = (os.cpu_count() or 1) if hogs is None else hogs
        self.churn = churn
        self._procs: list[subprocess.Popen] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.collections = 0

    @property
    def facts(self) -> dict[str, Any]:
        if not self.enabled:
            return {"load": "idle"}
        return {"load": f"{self.hogs} CPU hog processes (busy loop, SCHED_OTHER) + a Python "
                        f"thread churning allocations and gc.collect() in the measuring process"
                        if self.churn else f"{self.hogs} CPU hog processes",
                "gc_collections": self.collections}

    def _churn(self) -> None:
        junk: list[Any] = []
        while not self._stop.is_set():
            for i in range(5000):
                junk.append({"i": i, "b": bytearray(256)})
            junk.clear()
            gc.collect()
            self.collections += 1

    def __enter__(self) -> Load:
        if not self.enabled:
            return self
        for _ in range(self.hogs):
            self._procs.append(subprocess.Popen([sys.executable, "-c", _HOG],
                                                stdin=subprocess.DEVNULL))
        if self.churn:
            self._stop.clear()
            self._thread = threading.Thread(target=self._churn, name="bench-churn", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for proc in self._procs:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self._procs.clear()
