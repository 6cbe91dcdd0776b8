"""A step sequencer: kick, snare and hi-hat on a sixteenth-note grid, every hit its own voice.

    python demos/drum_machine.py [--bpm 110] [--bars 4] [--device X | --null]

Listen for: a steady beat that never drifts or flams.  Every hit is a one-shot voice started
at an exact output frame (``Engine.play(..., at=frame)``), so the grid is sample-accurate
however late Python schedules it, as long as it is scheduled ahead (a bar at a time here).
The drum sounds are numpy arrays made once; each voice reads them in place (no copy), so the
same kick buffer is played by many voices at once.  At the end it prints how many voices
played, the late starts (hits scheduled after their frame had been rendered: 0 means every
one was sample-accurate) and the engine's xruns.
"""

import argparse
import time

import numpy as np
from _demo import RATE, add_output_arguments, open_engine

PATTERN = {  # one character per sixteenth: x = hit
    "kick":  "x.......x.x.....",
    "snare": "....x.......x...",
    "hat":   "x.x.x.x.x.x.x.xx",
}


def drums(rate):
    t = np.arange(int(0.3 * rate)) / rate
    kick = np.sin(2 * np.pi * np.cumsum(50 + 90 * np.exp(-t * 25)) / rate) * np.exp(-t * 10)
    noise = np.random.default_rng(1).uniform(-1, 1, len(t))
    snare = (0.6 * noise + 0.4 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t * 18)
    hat = np.diff(noise, prepend=0.0) * np.exp(-t * 60)
    return {"kick": (0.7 * kick).astype(np.float32), "snare": (0.35 * snare).astype(np.float32),
            "hat": (0.12 * hat).astype(np.float32)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bpm", type=float, default=110.0)
    parser.add_argument("--bars", type=int, default=4)
    add_output_arguments(parser)
    args = parser.parse_args()
    sounds = drums(RATE)
    step = round(RATE * 60 / args.bpm / 4)  # a sixteenth, in frames: the grid
    voices = []
    with open_engine(args, blocksize=256, periods=3) as engine:
        origin = engine.frame + RATE // 10  # the first downbeat, 100 ms ahead of the mixer
        for bar in range(args.bars):
            bar_start = origin + bar * 16 * step
            # Schedule one bar while the previous one plays: Python only has to be early.
            while engine.frame < bar_start - 16 * step:
                time.sleep(0.01)
            for name, steps in PATTERN.items():
                for i, hit in enumerate(steps):
                    if hit == "x":
                        voices.append(engine.play(sounds[name], at=bar_start + i * step))
        for voice in voices:
            voice.wait()
        stats = engine.stats()
    print(f"{len(voices)} hits played, late starts {stats.late_starts}, xruns {stats.xruns}, "
          f"taints {sorted(stats.taints) or 'none'}")


if __name__ == "__main__":
    main()
