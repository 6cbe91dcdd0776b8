"""streamcore.Ring in one process: the API, its errors, the mirror, the model property, mlock."""

from __future__ import annotations

import gc
import mmap
import os
import resource
import struct
import warnings
from collections import deque

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import streamcore
from streamcore import (
    MemoryLockError,
    MemoryLockWarning,
    Ring,
    RingCorruptedError,
    RingFormatError,
)
from streamcore._native import lib

PAGE = os.sysconf("SC_PAGE_SIZE")


def pattern(start: int, count: int, channels: int, dtype: str = "int32") -> np.ndarray:
    """Frame i holds i in channel 0, -i-1 in channel 1, i*3 in channel 2 ... (no two equal)."""
    i = np.arange(start, start + count, dtype=np.int64)[:, None]
    c = np.arange(channels, dtype=np.int64)[None, :]
    values = np.where(c % 2 == 0, i * (c + 1), -i * (c + 1) - 1)
    return values.astype(dtype)


def vmlck_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    raise AssertionError("no VmLck line in /proc/self/status")


def poke_u64(ring: Ring, offset: int, value: int) -> None:
    """Write a value into the shared control page from outside, as another process could."""
    with mmap.mmap(ring.fd, PAGE) as page:
        page[offset:offset + 8] = struct.pack("<Q", value % 2**64)


def peek_u64(ring: Ring, offset: int) -> int:
    with mmap.mmap(ring.fd, PAGE, prot=mmap.PROT_READ) as page:
        return struct.unpack("<Q", page[offset:offset + 8])[0]


@pytest.fixture
def ring():
    with Ring(1000, channels=2, dtype="int32", lock=False) as r:
        yield r


class TestCreate:
    """Construction rounds the capacity, validates every argument and exposes the geometry."""

    @pytest.mark.parametrize(("frames", "channels", "dtype", "capacity"), [
        (1, 2, "float32", PAGE // 8),     # one page of 8-byte frames
        (1000, 2, "float32", 1024),       # the next power of two
        (1024, 2, "int16", 1024),         # already one
        (1, 3, "int32", PAGE // 4),       # 12-byte frames: a page multiple needs 1024 frames
        (5000, 1, "int16", 8192),
    ])
    def test_capacity_is_a_power_of_two_of_whole_pages(self, frames, channels, dtype, capacity):
        """capacity >= frames, a power of two, and capacity * frame_bytes a page multiple."""
        with Ring(frames, channels, dtype, lock=False) as r:
            assert r.capacity == capacity
            assert r.capacity >= frames
            assert r.capacity & (r.capacity - 1) == 0
            assert (r.capacity * r.frame_bytes) % PAGE == 0
            assert r.frame_bytes == channels * np.dtype(dtype).itemsize
            assert r.buffer.shape == (capacity, channels)
            assert r.buffer.dtype == np.dtype(dtype)
            assert (r.readable, r.writable) == (0, capacity)

    @pytest.mark.parametrize(("kwargs", "error", "words"), [
        ({"frames": 0}, ValueError, "frames must be at least 1"),
        ({"frames": -5}, ValueError, "0 or more"),
        ({"frames": 1.5}, TypeError, "integer"),
        ({"frames": True}, TypeError, "bool"),
        ({"frames": 8, "channels": 0}, ValueError, "channels must be at least 1"),
        ({"frames": 8, "dtype": "float64"}, ValueError, "float32, int16, int32"),
        ({"frames": 8, "dtype": "no such type"}, ValueError, "float32, int16, int32"),
        ({"frames": 8, "lock": "maybe"}, ValueError, "'try'"),
        ({"frames": 8, "name": 5}, TypeError, "name"),
        ({"frames": 2**40}, ValueError, "larger than"),
    ])
    def test_bad_arguments_raise_a_sentence(self, kwargs, error, words):
        """Bad sizes, dtypes and modes raise ValueError/TypeError naming the problem."""
        with pytest.raises(error, match=words):
            Ring(**kwargs)

    def test_memfd_is_named_and_sealed(self):
        """The fd is a size-sealed memfd labelled with the ring's name."""
        import fcntl
        with Ring(64, name="voice-7", lock=False) as r:
            link = os.readlink(f"/proc/self/fd/{r.fd}")
            assert link.startswith("/memfd:streamcore-ring:voice-7")
            seals = fcntl.fcntl(r.fd, fcntl.F_GET_SEALS)
            assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
            assert os.fstat(r.fd).st_size == PAGE + r.capacity * r.frame_bytes

    def test_dtype_accepts_numpy_spellings(self):
        """np.int16 and np.dtype('int16') work like 'int16'."""
        for spelling in (np.int16, np.dtype("int16"), "<i2"):
            with Ring(8, dtype=spelling, lock=False) as r:
                assert r.dtype == np.dtype("int16")

    def test_exported_from_package(self):
        """Ring and its errors are part of the package namespace."""
        assert streamcore.Ring is Ring
        assert issubclass(RingCorruptedError, RuntimeError)
        assert issubclass(RingFormatError, ValueError)
        assert issubclass(MemoryLockError, MemoryError)


class TestViews:
    """write_view/commit and read_view/release hand out the ring's own memory."""

    def test_write_view_is_the_ring_memory(self, ring):
        """A write_view shares memory with the buffer; what is written there is read back."""
        view = ring.write_view(10)
        assert view.shape == (10, 2)
        assert np.shares_memory(view, ring.buffer)
        view[:] = pattern(0, 10, 2)
        assert np.array_equal(ring.buffer[:10], pattern(0, 10, 2))
        assert ring.readable == 0  # not published yet
        ring.commit(10)
        assert ring.readable == 10
        out = ring.read_view(10)
        assert np.shares_memory(out, ring.buffer)
        assert np.array_equal(out, pattern(0, 10, 2))
        ring.release(10)
        assert (ring.readable, ring.writable) == (0, ring.capacity)

    def test_views_are_clipped_to_what_is_free(self, ring):
        """write_view gives min(n, writable) frames and read_view min(n, readable)."""
        assert ring.write_view(5000).shape == (ring.capacity, 2)
        ring.commit(100)
        assert ring.write_view(5000).shape == (ring.capacity - 100, 2)
        assert ring.read_view(5000).shape == (100, 2)
        assert ring.read_view(7).shape == (7, 2)

    def test_read_view_is_read_only(self, ring):
        """The reader cannot scribble on frames through its view."""
        ring.write(pattern(0, 4, 2))
        view = ring.read_view(4)
        with pytest.raises(ValueError, match="read-only"):
            view[0, 0] = 1

    def test_full_and_empty_count_overruns_and_underruns(self, ring):
        """A short write_view counts an overrun, a short read_view an underrun."""
        assert ring.read_view(1).shape[0] == 0
        assert ring.stats.underruns == 1
        ring.write(pattern(0, ring.capacity, 2))
        assert ring.write(pattern(0, 1, 2)) == 0
        assert ring.stats.overruns == 1
        assert ring.read_view(ring.capacity).shape[0] == ring.capacity
        s = ring.stats
        assert (s.overruns, s.underruns, s.frames_written, s.frames_read) == (
            1, 1, ring.capacity, 0)

    def test_commit_more_than_handed_out_is_refused(self, ring):
        """commit(k) above the last write_view raises and leaves the indices alone."""
        ring.write_view(10)
        with pytest.raises(ValueError, match="at most what it returned"):
            ring.commit(11)
        assert ring.readable == 0
        ring.commit(4)
        with pytest.raises(ValueError, match="more than the 6 frames"):
            ring.commit(7)
        ring.commit(6)
        assert ring.readable == 10

    def test_release_more_than_readable_is_refused(self, ring):
        """release(k) above readable raises and leaves the indices alone."""
        ring.write(pattern(0, 5, 2))
        with pytest.raises(ValueError, match="more than the 5 readable"):
            ring.release(6)
        assert ring.readable == 5
        ring.release(2)  # unread frames may be skipped
        assert np.array_equal(ring.read(10), pattern(2, 3, 2))

    @pytest.mark.parametrize("call", ["write_view", "read_view", "commit", "release"])
    def test_negative_counts_are_refused(self, ring, call):
        with pytest.raises(ValueError, match="0 or more"):
            getattr(ring, call)(-1)


class TestCopyingHelpers:
    """write(array) and read(n, out) copy through the views with full checks."""

    @pytest.mark.parametrize("dtype", ["float32", "int16", "int32"])
    def test_round_trip_every_dtype(self, dtype):
        """Frames come out bit-identical for each supported dtype."""
        with Ring(300, 3, dtype, lock=False) as r:
            frames = pattern(0, 300, 3, dtype)
            assert r.write(frames) == 300
            assert np.array_equal(r.read(1000), frames)

    def test_write_returns_what_fit(self, ring):
        """write() copies as much as there is room for and says how much."""
        frames = pattern(0, ring.capacity + 50, 2)
        assert ring.write(frames) == ring.capacity
        assert ring.write(frames) == 0

    def test_read_into_out(self, ring):
        """read(n, out) fills out and returns the filled part."""
        ring.write(pattern(0, 20, 2))
        out = np.zeros((8, 2), "int32")
        got = ring.read(100, out=out)
        assert np.shares_memory(got, out)
        assert np.array_equal(got, pattern(0, 8, 2))
        assert ring.readable == 12

    def test_mono_takes_one_dimensional_arrays(self):
        with Ring(16, 1, "int16", lock=False) as r:
            assert r.write(np.arange(5, dtype="int16")) == 5
            assert r.read(5).ravel().tolist() == [0, 1, 2, 3, 4]

    @pytest.mark.parametrize(("bad", "error", "words"), [
        (np.zeros((4, 2), "float32"), TypeError, "takes int32 frames"),
        (np.zeros((4, 3), "int32"), ValueError, r"shape \(n, 2\)"),
        (np.zeros(8, "int32"), ValueError, r"shape \(n, 2\)"),
        ([[1, 2]], TypeError, "numpy array"),
    ])
    def test_wrong_frames_are_refused_without_writing(self, ring, bad, error, words):
        """Wrong dtype or shape raises and commits nothing."""
        with pytest.raises(error, match=words):
            ring.write(bad)
        assert ring.readable == 0

    def test_wrong_out_is_refused_without_reading(self, ring):
        ring.write(pattern(0, 4, 2))
        with pytest.raises(TypeError, match="int32"):
            ring.read(4, out=np.zeros((4, 2), "int16"))
        assert ring.readable == 4


class TestMirror:
    """The second mapping makes every span contiguous: no wrap-around split."""

    def test_write_view_across_the_end_is_one_array(self):
        """A view crossing the end of the first mapping is contiguous and its tail lands at the
        start of the buffer; another handle on the same memfd reads it back in order."""
        with Ring(1000, 2, "int32", lock=False) as r:
            cap = r.capacity
            r.write(pattern(0, 1000, 2))
            r.release(1000)  # both indices at 1000, 24 frames before the end
            view = r.write_view(cap)
            assert view.shape == (cap, 2)  # all of it, in one piece
            assert view.flags.c_contiguous
            view[:] = pattern(1000, cap, 2)
            head = cap - 1000
            # Physical proof: frames past the end of the first mapping are the buffer's start.
            assert np.array_equal(r.buffer[:1000], pattern(1000 + head, 1000, 2))
            assert np.array_equal(r.buffer[1000:], pattern(1000, head, 2))
            r.commit(cap)
            with Ring.attach(r.fd, lock=False) as reader:
                got = reader.read_view(cap)
                assert got.shape == (cap, 2)
                assert got.flags.c_contiguous
                assert np.array_equal(got, pattern(1000, cap, 2))
                reader.release(cap)
            assert r.writable == cap

    def test_every_start_offset_gives_a_full_contiguous_view(self):
        """From start offsets all over the buffer, the whole capacity comes as one view."""
        with Ring(1, 2, "float32", lock=False) as r:
            cap, position = r.capacity, 0
            for target in range(0, cap, 37):
                step = (target - position) % cap  # move both indices to `target`
                r.write(np.zeros((step, 2), "float32"))
                r.release(step)
                view = r.write_view(cap)
                assert view.shape == (cap, 2)
                assert np.shares_memory(view, r.buffer[target:target + 1])
                view[:] = pattern(target, cap, 2, "float32")
                r.commit(cap)
                assert np.array_equal(r.read(cap), pattern(target, cap, 2, "float32"))
                position = target


class RingAgainstModel(RuleBasedStateMachine):
    """Any sequence of write/commit/read/release sizes moves the frames a deque would move."""

    def __init__(self):
        super().__init__()
        self.ring = Ring(1, 2, "int32", lock=False)  # capacity PAGE // 8 frames
        self.capacity = self.ring.capacity
        self.model: deque[int] = deque()
        self.next_frame = 0

    def teardown(self):
        self.ring.close()

    def _expect(self, count: int) -> np.ndarray:
        first = self.model[0] if count else 0
        return pattern(first, count, 2)

    @rule(n=st.integers(0, 1300), keep=st.integers(0, 1300))
    def write_view_commit(self, n, keep):
        view = self.ring.write_view(n)
        assert view.shape == (min(n, self.capacity - len(self.model)), 2)
        view[:] = pattern(self.next_frame, view.shape[0], 2)
        k = min(keep, view.shape[0])
        self.ring.commit(k)
        self.model.extend(range(self.next_frame, self.next_frame + k))
        self.next_frame += k

    @rule(n=st.integers(0, 1300), keep=st.integers(0, 1300))
    def read_view_release(self, n, keep):
        view = self.ring.read_view(n)
        assert view.shape == (min(n, len(self.model)), 2)
        assert np.array_equal(view, self._expect(view.shape[0]))
        k = min(keep, view.shape[0])
        self.ring.release(k)
        for _ in range(k):
            self.model.popleft()

    @rule(n=st.integers(0, 1300))
    def write_copy(self, n):
        written = self.ring.write(pattern(self.next_frame, n, 2))
        assert written == min(n, self.capacity - len(self.model))
        self.model.extend(range(self.next_frame, self.next_frame + written))
        self.next_frame += written

    @rule(n=st.integers(0, 1300))
    def read_copy(self, n):
        got = self.ring.read(n)
        assert np.array_equal(got, self._expect(min(n, len(self.model))))
        for _ in range(got.shape[0]):
            self.model.popleft()

    @rule(extra=st.integers(1, 50))
    def overcommit_is_refused(self, extra):
        k = self.ring.write_view(10).shape[0]
        try:
            self.ring.commit(k + extra)
        except ValueError:
            pass
        else:
            raise AssertionError("commit beyond the grant was accepted")

    @rule(extra=st.integers(1, 50))
    def overrelease_is_refused(self, extra):
        try:
            self.ring.release(len(self.model) + extra)
        except ValueError:
            pass
        else:
            raise AssertionError("release beyond readable was accepted")

    @invariant()
    def fill_levels_agree(self):
        assert self.ring.readable == len(self.model)
        assert self.ring.writable == self.capacity - len(self.model)
        s = self.ring.stats
        assert s.frames_written - s.frames_read == len(self.model)
        assert s.frames_written == self.next_frame
        assert (s.corruptions, s.broken) == (0, False)


TestRingAgainstModel = RingAgainstModel.TestCase
TestRingAgainstModel.settings = settings(max_examples=150, stateful_step_count=40,
                                         deadline=None)


class TestLifetime:
    """Closing is idempotent, a closed ring refuses use, views never dangle."""

    def test_close_twice_and_use_after_close(self):
        r = Ring(8, lock=False)
        r.close()
        r.close()
        assert r.closed
        for use in (lambda: r.write_view(1), lambda: r.read(1), lambda: r.readable,
                    lambda: r.fd, lambda: r.stats, lambda: r.commit(0)):
            with pytest.raises(ValueError, match="closed"):
                use()
        assert repr(r) == "<Ring closed>"

    def test_view_outlives_close(self):
        """A view kept after close() still reads the frames; the fd goes with the last view."""
        r = Ring(8, 2, "int32", lock=False)
        r.write(pattern(0, 8, 2))
        view = r.read_view(8)
        fd = r.fd
        r.close()
        gc.collect()
        assert os.fstat(fd).st_size > 0  # still open: the view holds the mapping
        assert np.array_equal(view, pattern(0, 8, 2))
        del view
        gc.collect()
        with pytest.raises(OSError):
            os.fstat(fd)

    def test_native_handle_outlives_close_while_kept(self):
        """The engine's (handle, keepalive) pair keeps the C handle usable after close()."""
        r = Ring(8, 2, "int32", lock=False)
        r.write(pattern(0, 3, 2))
        handle, keepalive = r._native_handle()
        fd = r.fd
        r.close()
        gc.collect()
        assert lib.sc_ring_readable(handle) == 3
        assert lib.sc_ring_fd(handle) == fd
        del keepalive
        gc.collect()
        with pytest.raises(OSError):
            os.fstat(fd)

    def test_collected_open_ring_warns(self):
        """Dropping an open ring emits a ResourceWarning (and still unmaps it)."""
        r = Ring(8, lock=False)
        fd = r.fd
        with pytest.warns(ResourceWarning, match="unclosed"):
            del r
            gc.collect()
        with pytest.raises(OSError):
            os.fstat(fd)

    def test_half_built_ring_closes_quietly(self):
        """A constructor that failed leaves an object whose close() and __del__ are safe."""
        r = Ring.__new__(Ring)
        r.close()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            del r
            gc.collect()


class TestAttachValidation:
    """attach() checks the shared header and refuses what it cannot trust."""

    def test_attach_matches_the_creator(self):
        with Ring(100, 3, "int16", lock=False) as r, Ring.attach(r.fd, lock=False) as a:
            assert (a.capacity, a.channels, a.dtype) == (r.capacity, 3, np.dtype("int16"))
            assert a.fd != r.fd  # its own dup

    @pytest.mark.parametrize(("offset", "value", "words"), [
        (lib.SC_RING_OFF_MAGIC, 0x1234, "magic"),
        (lib.SC_RING_OFF_VERSION, 7, "version"),
        (lib.SC_RING_OFF_FORMAT, 9, "inconsistent"),
        (lib.SC_RING_OFF_CHANNELS, 3, "inconsistent"),
        (lib.SC_RING_OFF_CAPACITY, 1000, "inconsistent"),
        (lib.SC_RING_OFF_CAPACITY, 2**20, "inconsistent"),
    ])
    def test_bad_header_is_refused(self, offset, value, words):
        """A wrong magic, version, format or geometry in the header raises RingFormatError."""
        with Ring(64, 2, "float32", lock=False) as r:
            size = 4 if offset in (lib.SC_RING_OFF_VERSION, lib.SC_RING_OFF_FORMAT,
                                   lib.SC_RING_OFF_CHANNELS) else 8
            with mmap.mmap(r.fd, PAGE) as page:
                page[offset:offset + size] = value.to_bytes(size, "little")
            with pytest.raises(RingFormatError, match=words):
                Ring.attach(r.fd, lock=False)

    def test_expected_format_mismatch_is_refused(self):
        with Ring(64, 2, "float32", lock=False) as r:
            with pytest.raises(RingFormatError, match="2 channels of float32, expected 1"):
                Ring.attach(r.fd, channels=1, lock=False)
            with pytest.raises(RingFormatError, match="expected 2 channels of int16"):
                Ring.attach(r.fd, dtype="int16", lock=False)

    def test_unsealed_memfd_and_other_files_are_refused(self, tmp_path):
        """A memfd that could shrink under us, a pipe, a file: not rings."""
        fd = os.memfd_create("fake-ring")
        read_end, write_end = os.pipe()
        path = tmp_path / "f"
        path.write_bytes(b"\0" * 3 * PAGE)
        file_fd = os.open(path, os.O_RDWR)
        try:
            os.ftruncate(fd, 3 * PAGE)
            for candidate in (fd, read_end, file_fd):
                with pytest.raises(RingFormatError, match="size-sealed memfd"):
                    Ring.attach(candidate, lock=False)
        finally:
            for f in (fd, read_end, write_end, file_fd):
                os.close(f)

    def test_closed_fd_is_an_os_error(self):
        fd = os.memfd_create("gone")
        os.close(fd)
        with pytest.raises(OSError, match="EBADF"):
            Ring.attach(fd, lock=False)

    def test_broken_ring_is_refused(self):
        with Ring(64, lock=False) as r:
            poke_u64(r, lib.SC_RING_OFF_WRITE_INDEX, r.capacity + 1)
            with pytest.raises(RingCorruptedError, match="broken"):
                Ring.attach(r.fd, lock=False)


class TestCorruptionInProcess:
    """Indices no honest peer writes break the ring; no view ever leaves the mapping."""

    @pytest.mark.parametrize("bad_write_index", [
        lambda cap, r: r + cap + 1,   # more than the capacity ahead
        lambda cap, r: r - 1,         # behind the reader
        lambda cap, r: 2**64 - 1,
        lambda cap, r: 2**63,
    ])
    def test_reader_refuses_a_bad_write_index(self, ring, bad_write_index):
        """The reader validates the write index whenever it loads it: here, when it asks for
        more than it last saw (a cached value needs no reload and cannot be wrong)."""
        ring.write(pattern(0, 10, 2))
        ring.read(3)
        poke_u64(ring, lib.SC_RING_OFF_WRITE_INDEX, bad_write_index(ring.capacity, 3))
        with pytest.raises(RingCorruptedError, match="broken"):
            ring.read_view(ring.capacity)
        s = ring.stats
        assert s.broken and s.corruptions == 1
        # Broken for good, on both sides, and said so by every call.
        for use in (lambda: ring.read_view(1), lambda: ring.write_view(1),
                    lambda: ring.readable, lambda: ring.writable, lambda: ring.release(0)):
            with pytest.raises(RingCorruptedError):
                use()
        assert peek_u64(ring, lib.SC_RING_OFF_BROKEN) & 0xFFFFFFFF == 1

    @pytest.mark.parametrize("bad_read_index", [
        lambda cap, w: w + 1,         # ahead of the writer
        lambda cap, w: w - cap - 1,   # further behind than the capacity
    ])
    def test_writer_refuses_a_bad_read_index(self, ring, bad_read_index):
        """The writer checks the reader's index before computing free space."""
        with Ring.attach(ring.fd, lock=False) as reader:
            ring.write(pattern(0, 10, 2))
            poke_u64(ring, lib.SC_RING_OFF_READ_INDEX, bad_read_index(ring.capacity, 10))
            with pytest.raises(RingCorruptedError):
                ring.write_view(ring.capacity)
            # The shared flag reaches the other handle, which never saw a bad value itself.
            with pytest.raises(RingCorruptedError):
                reader.read_view(1)
            assert reader.stats.broken and reader.stats.corruptions == 0

    def test_write_index_moving_backwards_is_caught(self, ring):
        """A write index lower than one already seen is corruption, even if within range."""
        ring.write(pattern(0, 10, 2))
        assert ring.read_view(20).shape[0] == 10  # the reader has now seen w = 10
        poke_u64(ring, lib.SC_RING_OFF_WRITE_INDEX, 8)
        with pytest.raises(RingCorruptedError):
            ring.read_view(20)

    def test_own_index_changed_behind_our_back(self, ring):
        """A side notices its published index was overwritten, even to a plausible value."""
        ring.write(pattern(0, 10, 2))
        poke_u64(ring, lib.SC_RING_OFF_WRITE_INDEX, 5)
        with pytest.raises(RingCorruptedError):
            ring.commit(0)


class TestMemoryLock:
    """lock=True really locks, once per physical page; failures are explained."""

    def test_vmlck_grows_by_the_ring_size(self):
        """VmLck grows by header + data (the mirror is not counted twice) and shrinks back."""
        before = vmlck_kib()
        with Ring(65536, 2, "float32", lock=True) as r:
            data = r.capacity * r.frame_bytes
            assert r.locked and r.stats.lock_errno == 0
            assert r.locked_bytes == data + PAGE
            assert vmlck_kib() - before == r.locked_bytes // 1024
        assert vmlck_kib() == before

    def test_unlocked_ring_is_not_counted(self):
        before = vmlck_kib()
        with Ring(65536, 2, lock=False) as r:
            assert not r.locked and r.locked_bytes == 0
            assert vmlck_kib() == before

    def test_limit_too_small_as_unprivileged_user(self, unprivileged):
        """As a user with RLIMIT_MEMLOCK 64 KiB: lock=True raises MemoryLockError naming the
        bytes, the limit and the remedy; lock='try' runs unlocked, warns and says so."""
        limit = 64 * 1024
        outcome = unprivileged.run(_lock_as_user, 65536, in_rt_group=False,
                                   rlimits={resource.RLIMIT_MEMLOCK: (limit, limit)})
        result = outcome.unwrap()
        needed = 65536 * 8 + PAGE
        assert result["error_type"] == "MemoryLockError"
        assert f"{needed} bytes" in result["error"]
        assert f"RLIMIT_MEMLOCK is {limit} bytes" in result["error"]
        assert "ulimit -l" in result["error"] and "lock='try'" in result["error"]
        assert result["warnings"] == ["MemoryLockWarning"]
        assert result["stats"].locked is False
        assert result["stats"].lock_errno in (1, 11, 12)  # EPERM, EAGAIN, ENOMEM
        assert result["round_trip"] is True


def _lock_as_user(frames: int) -> dict:
    result: dict = {}
    try:
        Ring(frames, 2, "float32", lock=True)
    except MemoryLockError as e:
        result["error_type"], result["error"] = type(e).__name__, str(e)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Ring(frames, 2, "float32", lock="try") as r:
            frames_in = pattern(0, 100, 2, "float32")
            r.write(frames_in)
            result["round_trip"] = bool(np.array_equal(r.read(100), frames_in))
            result["stats"] = r.stats
    result["warnings"] = [w.category.__name__ for w in caught
                          if issubclass(w.category, MemoryLockWarning)]
    return result
