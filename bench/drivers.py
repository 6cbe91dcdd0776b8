"""The test and benchmark drivers of ``streamcore._testing`` (native/testing/), for bench/ and
tests/: C loops that run without the GIL and that the shipped API (``streamcore._native``)
does not carry.

A ring made by ``streamcore.Ring`` is handed to a driver by address: the drivers are built
from the same ring.c, so the handle's layout is the same in both modules.
"""

from __future__ import annotations

import mmap
from typing import Any

from streamcore._testing import ffi, lib

from streamcore._native import ffi as _native_ffi
from streamcore.errors import check

__all__ = ["NativeProbe", "PageBuffer", "ffi", "lib", "pump_pattern", "ring_handle"]

PAGE_SIZE = mmap.PAGESIZE


def ring_handle(ring: Any) -> Any:
    """The ``sc_ring *`` of a ``streamcore.Ring`` as ``streamcore._testing`` types it.

    The ring must stay open while a driver uses the handle.
    """
    handle, _keepalive = ring._native_handle()
    return ffi.cast("sc_ring *", int(_native_ffi.cast("uintptr_t", handle)))


class PageBuffer:
    """Page-aligned anonymous memory (mmap), kept with its cffi view."""

    def __init__(self, nbytes: int) -> None:
        self.map = mmap.mmap(-1, nbytes)
        self.pointer: Any = ffi.from_buffer(self.map)  # keeps the mapping's buffer exported

    def close(self) -> None:
        del self.pointer
        self.map.close()


def pump_pattern(fd: int, total: int, half: int | None = None, zero_copy: bool = True) -> int:
    """Send ``total`` bytes of the counting pattern (uint32 word i == i) into pipe ``fd`` by the
    double-buffer protocol, with halves of ``half`` bytes (default: the pipe's size).

    Returns the bytes sent.  A reader that went away raises NativeError(EPIPE).  ``half``
    smaller than the pipe breaks the rule on purpose (tests use it to show corruption).
    Releases the GIL while it runs.
    """
    from streamcore.pipes import pipe_size

    half = pipe_size(fd) if half is None else half
    if half <= 0 or half % PAGE_SIZE:
        raise ValueError(f"half must be a positive multiple of the page size ({PAGE_SIZE})")
    if total < 0 or total % 4:
        raise ValueError("total must be a non-negative multiple of 4 bytes")
    buffer = PageBuffer(2 * half)
    try:
        return check(lib.sc_pipe_pump_pattern(fd, buffer.pointer, half, total, int(zero_copy)),
                     "vmsplice" if zero_copy else "write")
    finally:
        buffer.close()


class NativeProbe:
    """The probe thread in C (native/testing/sched_probe.c): a thread Python did not create,
    to promote by :attr:`tid` and let read its own scheduling or a forked child's.  The same
    protocol as ``streamcore.realtime.ProbeThread``, for tests of threads made in C."""

    _probe: Any = None

    def __init__(self) -> None:
        out = ffi.new("sc_probe_thread **")
        check(lib.sc_probe_thread_start(out), "starting the native probe thread")
        self._probe = out[0]  # owned: freed by sc_probe_thread_stop in close()
        self.tid = int(lib.sc_probe_thread_tid(self._probe))

    def _ask(self, request: Any, operation: str, tid: int) -> Any:
        from streamcore.realtime import Scheduling

        if self._probe is None:
            raise ValueError("the probe thread is closed")
        info = ffi.new("sc_sched_info *")
        check(request(self._probe, info), operation)
        policy = info.policy | (lib.SC_SCHED_RESET_ON_FORK if info.reset_on_fork else 0)
        return Scheduling._from_kernel(tid, policy, info.priority, info.nice)

    def scheduling(self) -> Any:
        return self._ask(lib.sc_probe_thread_read, "reading the probe's scheduling", self.tid)

    def child_scheduling(self) -> Any:
        return self._ask(lib.sc_probe_thread_fork_read, "forking from the probe thread", 0)

    def close(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            lib.sc_probe_thread_stop(probe)

    def __enter__(self) -> NativeProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
