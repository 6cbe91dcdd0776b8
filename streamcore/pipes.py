"""Pipe facts and primitives behind the pipe sink (thin wrappers over native/pipe.c).

The rule the pipe sink lives by: pages handed to a pipe with vmsplice are referenced, not
copied.  A buffer of two page-aligned halves, each exactly the pipe's size, may have one half
rewritten once the other half was spliced in whole; :func:`pump_pattern` runs that protocol
alone so tests and benchmarks can check it against real readers.
"""

from __future__ import annotations

import mmap
from typing import Any

from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.errors import check

__all__ = ["PAGE_SIZE", "max_pipe_size", "pipe_size", "pump_pattern", "set_pipe_size"]

PAGE_SIZE = mmap.PAGESIZE


def pipe_size(fd: int) -> int:
    """The pipe's capacity in bytes (F_GETPIPE_SZ); NativeError(EBADF/EINVAL) if no pipe."""
    return check(_lib.sc_pipe_get_size(fd), "F_GETPIPE_SZ")


def max_pipe_size() -> int:
    """/proc/sys/fs/pipe-max-size: the largest size an unprivileged F_SETPIPE_SZ may ask."""
    with open("/proc/sys/fs/pipe-max-size") as f:
        return int(f.read())


def set_pipe_size(fd: int, size: int) -> int:
    """Ask for a pipe of at least ``size`` bytes and return what the kernel set (a power of
    two number of pages, possibly larger).  EPERM above pipe-max-size without
    CAP_SYS_RESOURCE; EBUSY when the pipe holds more than ``size``."""
    if size <= 0:
        raise ValueError(f"a pipe size is a positive number of bytes, not {size}")
    limit = max_pipe_size()
    return check(_lib.sc_pipe_set_size(fd, size), "F_SETPIPE_SZ",
                 f"asked for {size} bytes (pipe-max-size is {limit})")


class _PageBuffer:
    """Page-aligned anonymous memory (mmap), kept with its cffi view."""

    def __init__(self, nbytes: int) -> None:
        self.map = mmap.mmap(-1, nbytes)
        self.pointer: Any = _ffi.from_buffer(self.map)  # keeps the mapping's buffer exported

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
    half = pipe_size(fd) if half is None else half
    if half <= 0 or half % PAGE_SIZE:
        raise ValueError(f"half must be a positive multiple of the page size ({PAGE_SIZE})")
    if total < 0 or total % 4:
        raise ValueError("total must be a non-negative multiple of 4 bytes")
    buffer = _PageBuffer(2 * half)
    try:
        return check(_lib.sc_pipe_pump_pattern(fd, buffer.pointer, half, total, int(zero_copy)),
                     "vmsplice" if zero_copy else "write")
    finally:
        buffer.close()
