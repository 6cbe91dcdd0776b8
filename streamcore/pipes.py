"""Pipe facts behind the pipe sink (thin wrappers over native/pipe.c).

The rule the pipe sink lives by: pages handed to a pipe with vmsplice are referenced, not
copied.  A buffer of two page-aligned halves, each exactly the pipe's size, may have one half
rewritten once the other half was spliced in whole.  That protocol alone, on a counting
pattern, is a test driver: ``bench.drivers.pump_pattern`` (streamcore._testing).
"""

from __future__ import annotations

import fcntl
import mmap
import os
import sys
from typing import IO, Any

from streamcore._native import lib as _lib
from streamcore.errors import check

__all__ = ["PAGE_SIZE", "max_pipe_size", "pipe_size", "set_pipe_size", "writable_fd"]

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


def writable_fd(target: int | IO[Any] | str, name: str = "target") -> int:
    """The open, writable descriptor ``target`` names: an fd, a file object (flushed first)
    or 'stdout'; ValueError/TypeError naming ``name`` otherwise (closed, read-only, wrong
    type)."""
    if isinstance(target, str):
        if target != "stdout":
            raise ValueError(f"{name} must be a descriptor, a file object or 'stdout', "
                             f"not {target!r}")
        if sys.stdout is None:  # descriptor 1 was closed when Python started
            raise ValueError(f"{name} 'stdout' is closed")
        target = sys.stdout  # checked below like any other descriptor
    if isinstance(target, bool):
        raise TypeError(f"{name} must be a descriptor or a file object, not a bool")
    if isinstance(target, int):
        fd = target
    elif hasattr(target, "fileno"):
        if hasattr(target, "flush"):
            target.flush()  # what Python buffered goes first
        fd = target.fileno()
    else:
        raise TypeError(f"{name} must be a descriptor or a file object, not "
                        f"{type(target).__name__}")
    try:
        os.fstat(fd)
    except (OSError, OverflowError) as e:
        why = e.strerror if isinstance(e, OSError) else "no such descriptor"
        raise ValueError(f"{name} descriptor {fd} is not open: {why}") from e
    # The descriptor's own access mode, not the path's: the read end of a pipe, or a file
    # opened 'rb', would take nothing (and a voice written to it would never end).
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
        raise ValueError(f"{name} descriptor {fd} is open for reading only (the read end "
                         f"of a pipe, or a file opened 'rb'): give one open for writing")
    return fd
