"""Ring benchmark: ``python -m bench.ring [--quick] [--out FILE]``.

1. Native two-thread throughput (producer and consumer pthreads, memcpy into and out of the
   ring) for chunks of 64 B .. 64 KiB, against single-thread memcpy of the same chunks between
   two buffers of the ring's size, measured alternately in the same run: the ratio is the
   figure (target >= 0.5 at 4 KiB).
2. Python side: ns per ``write_view`` + ``commit`` pair (and ``read_view`` + ``release``), and
   frames/s through ``Ring.write`` + ``Ring.read``, against ``jack.RingBuffer`` (JACK-Client)
   write/read and against a ring of numpy copies in pure Python, same block size, same run.

Writes JSON (default bench/results/ring.json): machine facts, every figure, its reference and
the ratio.
"""

from __future__ import annotations

import argparse
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.drivers import ffi, lib, ring_handle
from bench.harness import RESULTS, Report, median_of
from streamcore import Ring

FRAME_BYTES = 8  # stereo float32
CHUNK_BYTES = [64, 256, 1024, 4096, 16384, 65536]
RING_BYTES = 1 << 20  # 1 MiB of data: a typical large voice ring, more than L2 on many CPUs
TIMEOUT_NS = 60 * 10**9


def _ring_run(ring: Ring, frames: int, chunk_frames: int) -> tuple[float, float]:
    """One two-thread pump run: (GB/s, CPU time of the busier thread over the wall time).

    The busier thread is the bottleneck (the other one waits for it, partly asleep): near 1 it
    ran all along, well below 1 it was kept off a core by other load on the machine."""
    result = ffi.new("sc_ring_run_result *")
    status = lib.sc_ring_pump(ring_handle(ring), frames, chunk_frames, TIMEOUT_NS, result)
    if status != 0 or not result.completed:
        raise RuntimeError(f"pump failed: status {status}, {result.status}")
    on_cpu = max(result.producer_cpu_ns, result.consumer_cpu_ns) / result.elapsed_ns
    return frames * FRAME_BYTES / result.elapsed_ns, on_cpu  # bytes/ns = GB/s


def _memcpy_run(total_bytes: int, chunk: int) -> float:
    ns = lib.sc_memcpy_reference(total_bytes, chunk, RING_BYTES)
    if ns <= 0:
        raise RuntimeError(f"memcpy reference failed: {ns}")
    return total_bytes / ns


def native_throughput(total_bytes: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    with Ring(RING_BYTES // FRAME_BYTES, 2, "float32", lock="try") as ring:
        for chunk in CHUNK_BYTES:
            ring_runs, memcpy_runs, on_cpu = [], [], []
            for _ in range(repeats):  # alternate, so load changes hit both alike
                gbs, fraction = _ring_run(ring, total_bytes // FRAME_BYTES, chunk // FRAME_BYTES)
                ring_runs.append(gbs)
                on_cpu.append(fraction)
                memcpy_runs.append(_memcpy_run(total_bytes, chunk))
            ring_gbs, memcpy_gbs = float(np.median(ring_runs)), float(np.median(memcpy_runs))
            rows.append({
                "chunk_bytes": chunk,
                "ring_gb_per_s": round(ring_gbs, 3),
                "memcpy_gb_per_s": round(memcpy_gbs, 3),
                "ratio": round(ring_gbs / memcpy_gbs, 3),
                "best_ratio": round(max(ring_runs) / memcpy_gbs, 3),
                "threads_on_cpu_fraction": [round(x, 2) for x in on_cpu],
                "ring_runs_gb_per_s": [round(x, 3) for x in ring_runs],
                "memcpy_runs_gb_per_s": [round(x, 3) for x in memcpy_runs],
            })
        locked = ring.locked
    for row in rows:
        row["ring_locked"] = locked
    return rows


def view_pair_cost(pairs: int, block: int, repeats: int) -> dict[str, Any]:
    """ns per write_view+commit pair and per read_view+release pair, block frames each."""
    with Ring(1 << 16, 2, "float32", lock="try") as ring:
        per_fill = ring.capacity // block

        def writes() -> float:
            spent, done = 0, 0
            while done < pairs:
                t0 = time.perf_counter_ns()
                for _ in range(per_fill):
                    view = ring.write_view(block)
                    ring.commit(view.shape[0])
                spent += time.perf_counter_ns() - t0
                done += per_fill
                ring.release(ring.readable)
            return spent / done

        def reads() -> float:
            spent, done = 0, 0
            while done < pairs:
                ring.write_view(ring.capacity)
                ring.commit(ring.capacity)
                t0 = time.perf_counter_ns()
                for _ in range(per_fill):
                    view = ring.read_view(block)
                    ring.release(view.shape[0])
                spent += time.perf_counter_ns() - t0
                done += per_fill
            return spent / done

        result: dict[str, Any] = {
            "block_frames": block,
            "write_view_commit_ns": round(median_of(repeats, writes), 1),
            "read_view_release_ns": round(median_of(repeats, reads), 1),
        }

    # References: one write of the same block into a pure-Python numpy ring and into a
    # jack.RingBuffer (both copy; the view pair copies nothing by itself).
    block_data = np.zeros((block, 2), np.float32)

    def per_write(write: Callable[[], object], drain: Callable[[], object], fill: int) -> float:
        spent, done = 0, 0
        while done < pairs:
            t0 = time.perf_counter_ns()
            for _ in range(fill):
                write()
            spent += time.perf_counter_ns() - t0
            done += fill
            drain()
        return spent / done

    numpy_ring = NumpyRing(1 << 16, 2)
    result["numpy_ring_write_ns"] = round(median_of(repeats, lambda: per_write(
        lambda: numpy_ring.write(block_data), lambda: numpy_ring.read(1 << 16),
        (1 << 16) // block)), 1)
    result["ratio_vs_numpy_ring_write"] = round(
        result["write_view_commit_ns"] / result["numpy_ring_write_ns"], 3)
    try:
        import jack
    except (ImportError, OSError) as e:
        result["jack_ringbuffer_write_ns"] = f"unavailable: {e}"
        return result
    rb = jack.RingBuffer((1 << 16) * 8)
    space = rb.write_space // block_data.nbytes
    result["jack_ringbuffer_write_ns"] = round(median_of(repeats, lambda: per_write(
        lambda: rb.write(block_data), lambda: rb.read_advance(rb.read_space), space)), 1)
    result["ratio_vs_jack_ringbuffer_write"] = round(
        result["write_view_commit_ns"] / result["jack_ringbuffer_write_ns"], 3)
    result["note"] = "ratios are ns per call: below 1 means the view pair is cheaper"
    return result


class NumpyRing:
    """The pure-Python reference: a numpy array and two indices; copies in and out, split at
    the wrap (what one writes without a mirrored mapping)."""

    def __init__(self, frames: int, channels: int) -> None:
        self.data = np.zeros((frames, channels), np.float32)
        self.capacity, self.w, self.r = frames, 0, 0

    def write(self, block: np.ndarray) -> int:
        n = min(block.shape[0], self.capacity - (self.w - self.r))
        start = self.w % self.capacity
        first = min(n, self.capacity - start)
        self.data[start:start + first] = block[:first]
        self.data[:n - first] = block[first:n]
        self.w += n
        return n

    def read(self, n: int) -> np.ndarray:
        n = min(n, self.w - self.r)
        start = self.r % self.capacity
        first = min(n, self.capacity - start)
        out = np.empty((n, self.data.shape[1]), np.float32)
        out[:first] = self.data[start:start + first]
        out[first:] = self.data[:n - first]
        self.r += n
        return out


def python_frames_per_second(frames: int, block: int, repeats: int) -> dict[str, Any]:
    """Frames/s through write + read of `block`-frame arrays, for three rings."""
    data = np.random.default_rng(1).standard_normal((block, 2)).astype(np.float32)
    nbytes = data.nbytes
    capacity = 1 << 14
    rounds = frames // block

    def ours() -> float:
        with Ring(capacity, 2, "float32", lock="try") as ring:
            t0 = time.perf_counter_ns()
            for _ in range(rounds):
                ring.write(data)
                ring.read(block)
            return rounds * block / ((time.perf_counter_ns() - t0) / 1e9)

    def numpy_ring() -> float:
        ring = NumpyRing(capacity, 2)
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            ring.write(data)
            ring.read(block)
        return rounds * block / ((time.perf_counter_ns() - t0) / 1e9)

    result: dict[str, Any] = {"block_frames": block, "frames": rounds * block}
    result["streamcore_frames_per_s"] = round(median_of(repeats, ours))
    result["numpy_ring_frames_per_s"] = round(median_of(repeats, numpy_ring))
    result["ratio_vs_numpy_ring"] = round(
        result["streamcore_frames_per_s"] / result["numpy_ring_frames_per_s"], 3)
    try:
        import jack
    except (ImportError, OSError) as e:  # libjack missing: say so instead of failing the run
        result["jack_ringbuffer"] = f"unavailable: {e}"
        return result

    def jack_ring() -> float:
        ring = jack.RingBuffer(capacity * 8)
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            ring.write(data)
            np.frombuffer(ring.read(nbytes), np.float32).reshape(-1, 2)
        return rounds * block / ((time.perf_counter_ns() - t0) / 1e9)

    result["jack_ringbuffer_frames_per_s"] = round(median_of(repeats, jack_ring))
    result["ratio_vs_jack_ringbuffer"] = round(
        result["streamcore_frames_per_s"] / result["jack_ringbuffer_frames_per_s"], 3)
    return result


def run(quick: bool = False, smoke: bool = False) -> Report:
    """Measure; ``quick`` (and ``smoke``) use small sizes and one repeat."""
    quick = quick or smoke
    report = Report("ring", quick)
    repeats = 1 if quick else 5
    started = time.monotonic()
    rows = native_throughput((4 if quick else 512) << 20, repeats)
    pairs = view_pair_cost(2_000 if quick else 200_000, 256, repeats)
    per_block = [python_frames_per_second(20_000 if quick else 2_000_000, block, repeats)
                 for block in (64, 256, 1024)]
    for row in rows:
        report.add(f"two-thread ring throughput, {row['chunk_bytes']} B chunks",
                   row["ring_gb_per_s"], "GB/s",
                   reference=("single-thread memcpy, same chunks", row["memcpy_gb_per_s"]),
                   goal=">= 0.5x at 4096 B" if row["chunk_bytes"] == 4096 else None,
                   note=f"threads on cpu {min(row['threads_on_cpu_fraction']):.2f}.."
                        f"{max(row['threads_on_cpu_fraction']):.2f} of the wall time")
    report.add("write_view+commit pair, 256 frames", pairs["write_view_commit_ns"], "ns",
               reference=("jack.RingBuffer.write of the same block",
                          pairs["jack_ringbuffer_write_ns"]), higher_is_better=False)
    report.add("write_view+commit pair, 256 frames (vs numpy ring)",
               pairs["write_view_commit_ns"], "ns",
               reference=("pure-Python numpy ring write", pairs["numpy_ring_write_ns"]),
               higher_is_better=False)
    for row in per_block:
        report.add(f"Python write+read, {row['block_frames']}-frame blocks",
                   row["streamcore_frames_per_s"], "frames/s",
                   reference=("jack.RingBuffer write+read",
                              row["jack_ringbuffer_frames_per_s"]))
    report.extra = {
        "native_throughput": {
            "what": "two pthreads, memcpy in and out of a mirrored ring of 1 MiB, stereo float32",
            "reference": "one thread memcpy of the same chunks between two 1 MiB buffers",
            "note": "ratio: median ring run / median memcpy run; threads_on_cpu_fraction: per "
                    "ring run, the busier thread's CPU time over the wall time (well below 1: "
                    "other load on the machine kept the bottleneck thread off a core)",
            "rows": rows,
        },
        "python_view_pairs": pairs,
        "python_frames_per_s": per_block,
        "seconds": round(time.monotonic() - started, 2),
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ring",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, one repeat (a smoke run)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "ring.json",
                        help="JSON file to write (default bench/results/ring.json)")
    args = parser.parse_args(argv)
    report = run(args.quick)
    path = report.write_json(args.out)
    for f in report.figures:
        ratio = f"{f.ratio:.2f}x {f.reference_name}" if f.ratio else (f.refused or "")
        print(f"{f.name}: {f.value:.4g} {f.unit} ({ratio})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
