"""A real reader that splices the pipe on stdin into a file (the kernel moves the pages), with
random pauses, until it has moved --bytes bytes or the input ends.  Prints the bytes moved."""

from __future__ import annotations

import argparse
import os
import random
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--bytes", type=int, required=True)
    parser.add_argument("--max-sleep", type=float, default=0.002)
    parser.add_argument("--seed", type=int, default=2)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    moved = 0
    fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while moved < args.bytes:
            want = min(args.bytes - moved, rng.randrange(4096, 1 << 18))
            n = os.splice(sys.stdin.fileno(), fd, want)
            if n == 0:
                break
            moved += n
            time.sleep(rng.uniform(0, args.max_sleep))
    finally:
        os.close(fd)
    print(moved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
