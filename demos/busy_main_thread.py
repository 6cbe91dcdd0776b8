"""A producer the GIL cannot starve: a tone computed in a process of its own keeps playing
while this process's main thread is busy with Python work; the same producer in a thread
stutters.

    python demos/busy_main_thread.py [--seconds 4] [--device X | --null]

Listen for: a clean 440 Hz tone for the first half (written by a producer process), then the
same tone full of gaps for the second half (written by a thread of this process, which
waits for the GIL while the main thread parses and sorts data).  The underruns of each
half are printed: the silence the mixer had to play because the producer fell behind.
"""

import argparse
import json
import random
import threading
import time

import numpy as np
from _demo import RATE, add_output_arguments, open_engine

import streamcore


def tone(stream, seconds, frequency=440.0):
    """The producer: runs in its own process; stream.write blocks until queued."""
    for start in range(0, int(seconds * stream.samplerate), 1024):
        t = (start + np.arange(1024)) / stream.samplerate
        block = (0.2 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
        stream.write(np.repeat(block[:, None], stream.channels, axis=1))


def busy(seconds):
    """What an application's main thread may be doing: parsing and sorting a large batch of
    data.  One json.loads or list.sort call holds the GIL from start to end (the interpreter
    hands it over between bytecodes, never inside one C call)."""
    rng = random.Random(0)
    batch = json.dumps([rng.random() for _ in range(200_000)])
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        sorted(json.loads(batch))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    add_output_arguments(parser)
    args = parser.parse_args()
    half = args.seconds / 2
    with open_engine(args, blocksize=256) as engine:
        # 1. A process producer: a module-level function, its arguments pickled.
        voice = engine.stream(channels=2, producer=tone, args=(half,))
        while voice.ring.stats.frames_written < RATE // 8:  # it started and got ahead
            time.sleep(0.01)
        busy(half)
        voice.wait()
        process_underruns = voice.underruns

        # 2. The same tone from a thread of this process.
        voice = engine.stream(channels=2)
        stream = streamcore.ProducerStream(voice.ring, engine.samplerate, engine.blocksize)
        producer = threading.Thread(target=tone, args=(stream, half))
        producer.start()
        busy(half)
        producer.join()
        voice.finish()
        voice.wait()
        thread_underruns = voice.underruns
    print(f"process producer underruns {process_underruns}; "
          f"thread producer underruns {thread_underruns}")


if __name__ == "__main__":
    main()
