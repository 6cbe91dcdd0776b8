"""A real, slow pipe reader: reads stdin in chunks with random pauses and checks the counting
pattern (uint32 word i == i).  Prints one JSON line: bytes read and words that differ.

Usage: python pattern_reader.py [--initial-sleep S] [--max-sleep S] [--seed N] [--splice FILE]
With --splice it splices stdin into FILE (the kernel moves the pages) and checks FILE after.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np


def check(data: bytes, offset: int) -> int:
    words = np.frombuffer(data, dtype="<u4")
    expected = (np.arange(words.size, dtype=np.uint64) + offset // 4).astype(np.uint32)
    return int(np.count_nonzero(words != expected))


def float_pattern(first: int, count: int) -> np.ndarray:
    """The engine tests' float32 counting pattern: word k holds float(k % (2**24 - 1) + 1),
    exact in float32 and never 0 (silence before it is skipped)."""
    k = np.arange(first, first + count, dtype=np.int64)
    return (k % (2**24 - 1) + 1).astype("<f4")


def read_float_stream(fd: int, total_words: int, rng: random.Random, max_sleep: float,
                      chunk: int) -> dict:
    """Skip leading silence, then check ``total_words`` words of the float pattern."""
    started = False
    checked = mismatches = skipped = 0
    pending = b""
    while checked < total_words:
        data = os.read(fd, rng.randrange(4096, chunk + 1))
        if not data:
            break
        data = pending + data
        usable = len(data) - len(data) % 4
        pending = data[usable:]
        words = np.frombuffer(data[:usable], dtype="<f4")
        if not started:
            nonzero = np.flatnonzero(words)
            if nonzero.size == 0:
                skipped += words.size
                continue
            skipped += int(nonzero[0])
            words = words[nonzero[0]:]
            started = True
        words = words[: total_words - checked]
        mismatches += int(np.count_nonzero(words != float_pattern(checked, words.size)))
        checked += words.size
        if max_sleep:
            time.sleep(rng.uniform(0, max_sleep))
    return {"words": checked, "mismatches": mismatches, "skipped": skipped}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--initial-sleep", type=float, default=0.0)
    parser.add_argument("--max-sleep", type=float, default=0.002)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=65536)
    parser.add_argument("--float-words", type=int, default=0,
                        help="check this many words of the engine's float pattern instead")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    time.sleep(args.initial_sleep)
    fd = sys.stdin.fileno()
    if args.float_words:
        print(json.dumps(read_float_stream(fd, args.float_words, rng, args.max_sleep,
                                           args.chunk)))
        return 0
    offset = mismatches = 0
    pending = b""
    while True:
        chunk = os.read(fd, rng.randrange(4096, args.chunk + 1))
        if not chunk:
            break
        data = pending + chunk
        usable = len(data) - len(data) % 4
        mismatches += check(data[:usable], offset)
        offset += usable
        pending = data[usable:]
        if args.max_sleep:
            time.sleep(rng.uniform(0, args.max_sleep))
    print(json.dumps({"bytes": offset + len(pending), "mismatches": mismatches}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
