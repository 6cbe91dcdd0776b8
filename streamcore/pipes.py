"""Pipe facts behind the pipe sink (thin wrappers over native/pipe.c).

The rule the pipe sink lives by: pages handed to a pipe with vmsplice are referenced, not
copied.  A buffer of two page-aligned halves, each exactly the pipe's size, may have one half
rewritten once the other half was spliced in whole.  That protocol alone, on a counting
pattern, is a test driver: ``bench.drivers.pump_pattern`` (streamcore._testing).
"""

from __future__ import annotations

import mmap

from streamcore._native import lib as _lib
from streamcore.errors import check

__all__ = ["PAGE_SIZE", "max_pipe_size", "pipe_size", "set_pipe_size"]

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
