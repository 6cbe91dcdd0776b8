"""WAV headers for streams: written before the samples, sizes made exact afterwards.

A stream of unknown length gets RIFF and data sizes of 0xFFFFFFFF, which aplay, sox and
ffmpeg read until end of input; a regular file gets the real sizes once its writer stopped
(:func:`fix_sizes`).  Shared by the pipe sink and capture's tap writer.
"""

from __future__ import annotations

import os
import struct

import numpy as _np

__all__ = ["HEADER_BYTES", "STREAMING_SIZE", "fix_sizes", "header"]

TAGS = {"int16": 1, "int32": 1, "float32": 3}  # WAVE_FORMAT_PCM, _IEEE_FLOAT
STREAMING_SIZE = 0xFFFFFFFF  # "unknown length": readers play until end of input
HEADER_BYTES = 44


def header(samplerate: int, channels: int, dtype: str) -> bytes:
    """A 44-byte WAV header for a stream of unknown length (RIFF and data sizes 0xFFFFFFFF),
    which aplay, sox and ffmpeg read until end of input."""
    sample_bytes = _np.dtype(dtype).itemsize
    block_align = channels * sample_bytes
    fmt = struct.pack("<HHIIHH", TAGS[dtype], channels, samplerate,
                      samplerate * block_align, block_align, 8 * sample_bytes)
    return (b"RIFF" + struct.pack("<I", STREAMING_SIZE) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", STREAMING_SIZE))


def fix_sizes(fd: int, header_at: int, written: int) -> str | None:
    """Write the real RIFF and data sizes into the header at ``header_at`` of the regular
    file ``fd``, ``written`` bytes (header included) after it; a stream past 4 GiB keeps
    0xFFFFFFFF.  Returns None, or why the header could not be fixed."""
    if written < HEADER_BYTES:
        return None
    data = written - HEADER_BYTES
    if data + 36 > STREAMING_SIZE:
        return None
    try:
        os.pwrite(fd, struct.pack("<I", data + 36), header_at + 4)
        os.pwrite(fd, struct.pack("<I", data), header_at + 40)
    except OSError as e:
        return f"fixing the WAV header's sizes failed: {e.strerror}"
    return None
