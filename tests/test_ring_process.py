"""Rings shared between processes: a producer in a child, a hostile peer scribbling indices."""

from __future__ import annotations

import mmap
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from streamcore import Ring, RingCorruptedError
from streamcore._native import lib

PAGE = os.sysconf("SC_PAGE_SIZE")
CHANNELS = 2


def expected(start: int, count: int) -> np.ndarray:
    """Frame i of the producers' pattern: (i, -i) as int32 (wrapping)."""
    i = np.arange(start, start + count, dtype=np.int64)
    return np.stack([i, -i], axis=1).astype(np.int32)


def produce(ring: Ring, total: int, chunk: int = 4096) -> None:
    """Write frames 0..total of the pattern through write_view/commit, waiting when full."""
    done = 0
    while done < total:
        view = ring.write_view(min(chunk, total - done))
        k = view.shape[0]
        if k == 0:
            time.sleep(0.0002)
            continue
        view[:] = expected(done, k)
        ring.commit(k)
        done += k


def consume(ring: Ring, total: int, child: int, timeout: float = 120.0) -> tuple[int, int]:
    """Read frames until `total` arrived, the child died, or the timeout: (frames, mismatches)."""
    done = bad = 0
    deadline = time.monotonic() + timeout
    while done < total and time.monotonic() < deadline:
        view = ring.read_view(8192)
        k = view.shape[0]
        if k == 0:
            if os.waitpid(child, os.WNOHANG)[0] == child and ring.readable == 0:
                child = -1
                break
            time.sleep(0.0002)
            continue
        bad += int(np.count_nonzero(view != expected(done, k)))
        ring.release(k)
        done += k
    return done, bad


def reap(pid: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish in {timeout} s")


def fork_child(func, *args) -> int:
    """Run func(*args) in a forked child that exits 0 on success, 1 on an exception."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            func(*args)
            code = 0
        except BaseException as e:  # the parent sees the exit status; stderr has the reason
            os.write(2, f"child failed: {e!r}\n".encode())
        finally:
            os._exit(code)
    return pid


class TestInheritance:
    """inherit=False keeps a ring out of forked children; the default shares it."""

    @pytest.mark.parametrize("inherit", [False, True])
    def test_fork_sees_the_ring_only_when_inherited(self, inherit):
        with Ring(64, CHANNELS, "int32", lock=False, name=f"inherit-{inherit}",
                  inherit=inherit) as ring:
            ring.write(expected(0, 5))

            def child_main() -> None:
                with open("/proc/self/maps") as maps:
                    mapped = f"streamcore-ring:inherit-{inherit}" in maps.read()
                assert mapped == inherit, f"mapped in the child: {mapped}"
                assert ring.closed == (not inherit)
                if inherit:  # the inherited handle reads the parent's frames
                    assert np.array_equal(ring.read(5), expected(0, 5))

            assert reap(fork_child(child_main)) == 0
            assert not ring.closed


class TestCrossProcess:
    """A producer process writes into memory the consumer process reads."""

    def test_forked_producer_attaches_by_fd(self):
        """A forked child attaches to the memfd and writes 10^7 frames; all arrive intact."""
        total = 10**7
        with Ring(65536, CHANNELS, "int32", lock=True) as ring:
            def child_main(fd: int) -> None:
                with Ring.attach(fd, channels=CHANNELS, dtype="int32", lock=True) as mine:
                    produce(mine, total)

            pid = fork_child(child_main, ring.fd)
            try:
                frames, mismatches = consume(ring, total, pid)
            finally:
                status = reap(pid)
            assert status == 0
            assert (frames, mismatches) == (total, 0)
            s = ring.stats
            assert (s.frames_written, s.frames_read, s.corruptions) == (total, total, 0)

    def test_spawned_producer_gets_the_fd_over_scm_rights(self):
        """A fresh interpreter receives the memfd by SCM_RIGHTS, attaches and writes 10^6
        frames through write(); the parent reads them all intact."""
        total = 10**6
        code = textwrap.dedent(f"""
            import socket, sys, time
            import numpy as np
            from streamcore import Ring
            sock = socket.socket(fileno=int(sys.argv[1]))
            _, fds, _, _ = socket.recv_fds(sock, 16, 1)
            with Ring.attach(fds[0], channels={CHANNELS}, dtype="int32") as ring:
                done = 0
                while done < {total}:
                    i = np.arange(done, min(done + 5000, {total}), dtype=np.int64)
                    frames = np.stack([i, -i], axis=1).astype(np.int32)
                    n = ring.write(frames)
                    done += n
                    if n == 0:
                        time.sleep(0.0002)
            sock.sendall(b"done")
        """)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with Ring(16384, CHANNELS, "int32", lock=True) as ring, ours:
            child = subprocess.Popen([sys.executable, "-c", code, str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()], stderr=subprocess.PIPE)
            theirs.close()
            try:
                socket.send_fds(ours, [b"ring"], [ring.fd])
                frames, mismatches = consume(ring, total, child.pid)
                assert ours.recv(4) == b"done"
            finally:
                _, err = child.communicate(timeout=60)
            assert child.returncode == 0, err.decode()
            assert (frames, mismatches) == (total, 0)


def scribble(fd: int, seconds: float, seed: int) -> None:
    """The hostile peer: map the ring's control page and write random values into both
    indices (and now and then plausible-looking ones) until time is up."""
    rng = random.Random(seed)
    with mmap.mmap(fd, PAGE) as page:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for offset in (lib.SC_RING_OFF_WRITE_INDEX, lib.SC_RING_OFF_READ_INDEX):
                value = rng.getrandbits(64) if rng.random() < 0.8 else rng.randrange(0, 1 << 16)
                page[offset:offset + 8] = struct.pack("<Q", value)


class TestHostilePeer:
    """A process scribbling over the shared indices breaks the ring, never the reader."""

    def test_reader_raises_and_never_leaves_the_mapping(self):
        with Ring(4096, CHANNELS, "int32", lock=True) as ring:
            ring.write(expected(0, 1000))
            mirror_start = ring.buffer.__array_interface__["data"][0]
            mirror_end = mirror_start + 2 * ring.capacity * ring.frame_bytes
            pid = fork_child(scribble, ring.fd, 20.0, 1)
            views = 0
            try:
                with pytest.raises(RingCorruptedError, match="broken") as caught:
                    deadline = time.monotonic() + 20.0
                    while time.monotonic() < deadline:
                        view = ring.read_view(ring.capacity)
                        # Whatever came back lies inside this process's own mapping.
                        start = view.__array_interface__["data"][0]
                        assert view.shape[0] <= ring.capacity
                        assert mirror_start <= start
                        assert start + view.nbytes <= mirror_end
                        int(view.sum())  # touch every frame handed out
                        ring.release(view.shape[0])
                        views += 1
            finally:
                os.kill(pid, signal.SIGKILL)
                reap(pid)
            assert "other side" in str(caught.value)
            s = ring.stats
            assert s.broken and s.corruptions >= 1
            with pytest.raises(RingCorruptedError):
                ring.write_view(1)
            with pytest.raises(RingCorruptedError):
                _ = ring.readable

    def test_writer_in_a_child_sees_the_break(self):
        """When the reader finds the ring broken, a writer in another process is told too,
        through the shared flag, though nothing it checks itself looks wrong."""
        with Ring(4096, CHANNELS, "int32", lock=False) as ring:
            read_end, write_end = os.pipe()

            def writer(fd: int) -> None:
                with Ring.attach(fd, lock=False) as mine:
                    mine.write(expected(0, 10))
                    os.write(write_end, b"w")
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        try:
                            mine.write_view(1)
                        except RingCorruptedError:
                            return
                        time.sleep(0.001)
                    raise AssertionError("the writer never saw the ring broken")

            pid = fork_child(writer, ring.fd)
            try:
                assert os.read(read_end, 1) == b"w"
                # A read index the writer must accept (0 <= 5 <= 10) but the reader knows it never
                # stored: only the reader can find this, so the writer learns it from the flag.
                with mmap.mmap(ring.fd, PAGE) as page:
                    off = lib.SC_RING_OFF_READ_INDEX
                    page[off:off + 8] = struct.pack("<Q", 5)
                with pytest.raises(RingCorruptedError):
                    ring.read_view(1)
                assert reap(pid) == 0
            finally:
                os.close(read_end)
                os.close(write_end)
