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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--initial-sleep", type=float, default=0.0)
    parser.add_argument("--max-sleep", type=float, default=0.002)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=65536)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    time.sleep(args.initial_sleep)
    fd = sys.stdin.fileno()
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
