"""Sinks: consumers of the engine's output ring (``Engine(sink=...)``).

- :class:`Sink` (``streamcore.sinks.base``): the protocol every sink follows, and
  :class:`SinkContext`, all a sink sees of its engine.
- :class:`DeviceSink` (``streamcore.sinks.device``): any PortAudio output device, through a
  C stream callback (no Python runs in the audio thread).
- :class:`PipeSink` (``streamcore.sinks.pipe``): a pipe, FIFO, file or stdout; the output
  pages themselves are handed over with vmsplice (zero copy), raw or as a streaming WAV.
- :class:`FileSink` (``streamcore.sinks.file``): WAV/FLAC/OGG through soundfile, written by a
  normal thread, offline (as fast as the disk takes it) or at the sample rate's pace.
"""

from __future__ import annotations

from streamcore.sinks.base import Sink, SinkContext
from streamcore.sinks.device import DeviceSink
from streamcore.sinks.file import FileSink
from streamcore.sinks.pipe import PipeSink

__all__ = ["DeviceSink", "FileSink", "PipeSink", "Sink", "SinkContext"]
