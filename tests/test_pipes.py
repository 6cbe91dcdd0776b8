"""The pipe primitives and the vmsplice double-buffer rule, against real reader processes."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys

import pytest

from bench.drivers import pump_pattern
from streamcore.errors import NativeError
from streamcore.pipes import PAGE_SIZE, pipe_size, set_pipe_size

READER = pathlib.Path(__file__).parent / "helpers" / "pattern_reader.py"


def run_through_reader(total: int, *, pipe_bytes: int, half: int | None = None,
                       zero_copy: bool = True, initial_sleep: float = 0.0,
                       max_sleep: float = 0.002) -> tuple[int, dict]:
    """Pump the pattern into a pipe whose reader is a separate, slow Python process."""
    read_end, write_end = os.pipe()
    try:
        actual = set_pipe_size(write_end, pipe_bytes)
        reader = subprocess.Popen(
            [sys.executable, str(READER), "--initial-sleep", str(initial_sleep),
             "--max-sleep", str(max_sleep)],
            stdin=read_end, stdout=subprocess.PIPE, text=True)
        os.close(read_end)
        read_end = -1
        sent = pump_pattern(write_end, total, half=half if half else actual,
                            zero_copy=zero_copy)
    finally:
        if read_end >= 0:
            os.close(read_end)
        os.close(write_end)
    out, _ = reader.communicate(timeout=120)
    assert reader.returncode == 0
    return sent, json.loads(out)


class TestPipeSize:
    """F_SETPIPE_SZ is asked, and the size the kernel really set is what we use."""

    def test_size_is_rounded_up_to_pages(self):
        """Asking for 5 pages gives a power of two number of pages, at least 5."""
        r, w = os.pipe()
        try:
            got = set_pipe_size(w, 5 * PAGE_SIZE)
            assert got == pipe_size(w) == pipe_size(r)
            pages = got // PAGE_SIZE
            assert got % PAGE_SIZE == 0 and pages >= 5 and pages & (pages - 1) == 0
        finally:
            os.close(r)
            os.close(w)

    def test_not_a_pipe(self, tmp_path):
        """A regular file is no pipe: a NativeError with EBADF or EINVAL, naming F_GETPIPE_SZ."""
        with open(tmp_path / "f", "wb") as f, pytest.raises(NativeError) as info:
            pipe_size(f.fileno())
        assert info.value.errno in (errno.EBADF, errno.EINVAL)
        assert "F_GETPIPE_SZ" in str(info.value)

    def test_bad_size(self):
        r, w = os.pipe()
        try:
            with pytest.raises(ValueError):
                set_pipe_size(w, 0)
        finally:
            os.close(r)
            os.close(w)


class TestDoubleBuffer:
    """Halves of exactly the pipe's size are never rewritten while the pipe holds them."""

    @pytest.mark.parametrize("pipe_bytes", [64 * 1024, 1024 * 1024])
    def test_slow_reader_sees_every_word(self, pipe_bytes):
        """16 MiB through vmsplice to a reader that pauses at random: no word differs."""
        total = 16 * 1024 * 1024
        sent, seen = run_through_reader(total, pipe_bytes=pipe_bytes)
        assert sent == total
        assert seen == {"bytes": total, "mismatches": 0}

    def test_breaking_the_rule_corrupts(self):
        """Control: halves of half the pipe's size let the writer rewrite pages the pipe still
        holds, and the reader (which waits before its first read) sees it.  This proves the
        reader detects the hazard the protocol avoids."""
        pipe_bytes = 64 * 1024
        _, seen = run_through_reader(4 * pipe_bytes, pipe_bytes=pipe_bytes,
                                     half=pipe_bytes // 2, initial_sleep=0.3)
        assert seen["mismatches"] > 0

    def test_write_path_is_also_exact(self):
        """zero_copy=False (plain write) delivers the same bytes."""
        total = 4 * 1024 * 1024
        sent, seen = run_through_reader(total, pipe_bytes=64 * 1024, zero_copy=False)
        assert seen == {"bytes": total, "mismatches": 0} and sent == total


SIGPIPE_DEFAULT_PROGRAM = """
import errno, os, signal
from streamcore.errors import NativeError
from bench.drivers import pump_pattern
signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as a C host or `python -X` embedding may have it
r, w = os.pipe()
os.close(r)
try:
    pump_pattern(w, 1024 * 1024)
except NativeError as e:
    print(errno.errorcode[e.errno])
"""


class TestReaderGone:
    """A reader that goes away is an error for the writer, never the death of the process."""

    def test_epipe_not_sigpipe(self):
        """Even with SIGPIPE at its default action (death), the writer gets EPIPE and lives."""
        done = subprocess.run([sys.executable, "-c", SIGPIPE_DEFAULT_PROGRAM],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (done.returncode, done.stderr)
        assert done.stdout.strip() == "EPIPE"
