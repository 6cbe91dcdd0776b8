"""The smallest useful program: play an audio file on the default output device.

    python demos/play_file.py [FILE]

Listen for: the file, once, at its own speed (a file at another rate than the device's is
resampled with soxr, never played fast or slow).  Without FILE it plays demos/sounds/chime.flac,
three rising bell-like notes.  On a machine without a sound device it raises NoDeviceError,
which says what to do (`streamcore play FILE` falls back to a WAV file instead).
"""

import pathlib
import sys

import streamcore

path = sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent / "sounds/chime.flac"
stats = streamcore.play(path)  # blocks until it has been heard; Ctrl-C fades out
print(f"xruns {stats.xruns}, taints {sorted(stats.taints) or 'none'}")
