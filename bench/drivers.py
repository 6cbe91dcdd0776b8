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

__all__ = ["PageBuffer", "ffi", "lib", "pump_pattern", "ring_handle"]

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
