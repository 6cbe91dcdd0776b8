"""A Python thread synthesises audio live into a streaming voice while the main thread does
deliberately heavy, GIL-holding Python work.

    python demos/live_synth.py [--seconds 5] [--device X | --null]

Listen for: a slowly sweeping tone with a little noise, without a single click or gap, while
the main thread grinds through pure-Python busywork (and garbage collection).  The mixer is a
C thread that never needs the GIL; the generator thread only has to keep the voice's ring
(half a second) from running dry, which the GIL's 5 ms switch interval easily allows.  At
the end it prints the engine's xruns and the voice's underruns: both 0.
"""

import argparse
import gc
import threading
import time

import numpy as np
from _demo import RATE, add_output_arguments, open_engine

BLOCK = 1024  # frames the generator writes at a time


def generate(voice, stop):
    """Fill the voice's ring in place (write_view/commit: no copy) until told to stop."""
    phase, n = 0.0, 0
    rng = np.random.default_rng(3)
    while not stop.is_set():
        if voice.writable < BLOCK:
            time.sleep(0.005)
            continue
        view = voice.write_view(BLOCK)  # the ring's own memory, shape (BLOCK, 1)
        freq = 330 + 110 * np.sin(2 * np.pi * 0.2 * (n + np.arange(BLOCK)) / RATE)
        phases = phase + np.cumsum(2 * np.pi * freq / RATE)
        view[:, 0] = 0.2 * np.sin(phases) + 0.01 * rng.standard_normal(BLOCK)
        voice.commit(BLOCK)
        phase, n = phases[-1] % (2 * np.pi), n + BLOCK


def busywork(seconds):
    """Pure Python that holds the GIL for long stretches, plus full garbage collections."""
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        table = {i: str(i) * 3 for i in range(50_000)}
        sum(len(v) for v in table.values())
        gc.collect()
        rounds += 1
    return rounds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    add_output_arguments(parser)
    args = parser.parse_args()
    with open_engine(args, blocksize=256) as engine:
        # Start 100 ms from now, so the generator has filled the ring before the first frame.
        voice = engine.stream(channels=1, frames=RATE // 2, at=engine.frame + RATE // 10)
        stop = threading.Event()
        producer = threading.Thread(target=generate, args=(voice, stop), daemon=True)
        producer.start()
        rounds = busywork(args.seconds)
        voice.stop(fade=0.05)
        voice.wait()
        stop.set()
        producer.join()
        stats = engine.stats()
    print(f"busywork rounds {rounds}; xruns {stats.xruns}; voice underruns {voice.underruns}; "
          f"taints {sorted(stats.taints) or 'none'}")


if __name__ == "__main__":
    main()
