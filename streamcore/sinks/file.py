"""The file sink: WAV, FLAC or OGG through soundfile, written by a normal Python thread.

:class:`FileSink` never writes from a realtime thread: its writer thread (SCHED_OTHER) is the
output ring's single reader.  It takes every whole period the ring holds, writes it, releases
it and calls ``context.period_consumed()`` once per period, which wakes the mixer to render
the next.  So by default the engine renders as fast as the disk takes it (offline rendering, like
JACK's freewheel mode); with ``realtime=True`` the writer paces itself at the sample rate.

On a clean stop nothing is lost: the engine stops the writer, then the mixer, then calls
:meth:`FileSink.drain`, which writes what the mixer rendered but nobody consumed yet, so the
file holds exactly ``engine.stats().frames`` frames; :meth:`FileSink.close` finalises the
header.  A write error (disk full, file too large, I/O error), or the file losing its name
(its directory removed: checked every 0.25 s and at close), stops the writer, sets
:attr:`~streamcore.sinks.base.Sink.error`, stops the engine, and :meth:`close` raises
:class:`~streamcore.errors.SinkError` with it (once): it is reported, never swallowed.

Concurrency: the engine calls open/start/stop/drain/close from one Python thread; the writer
thread owns the SoundFile and the ring's read side from start() until stop() returns.  A stop
followed by a start writes on into the same file; another engine opening the sink after the
first one closed starts the file again (truncated).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from streamcore.errors import EngineClosedError, SinkError
from streamcore.sinks.base import Sink, SinkContext

__all__ = ["FileSink"]

_EXTENSIONS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG"}

# The subtype that holds the engine's samples (lossless where the container allows it).
_SUBTYPES = {
    ("WAV", "float32"): "FLOAT", ("WAV", "int16"): "PCM_16", ("WAV", "int32"): "PCM_32",
    ("FLAC", "float32"): "PCM_24", ("FLAC", "int16"): "PCM_16", ("FLAC", "int32"): "PCM_24",
    ("OGG", "float32"): "VORBIS", ("OGG", "int16"): "VORBIS", ("OGG", "int32"): "VORBIS",
}


def _sf() -> Any:
    import soundfile

    return soundfile


def choose_format(path: str, format: str | None, subtype: str | None,
                  dtype: str) -> tuple[str, str]:
    """(format, subtype) for ``path`` (pure): the format from the argument or the extension,
    the subtype from the argument or the engine's dtype (float32 WAV is FLOAT, int16 is
    PCM_16; FLAC has no float: float32 and int32 go to PCM_24, which rounds)."""
    if format is None:
        ext = os.path.splitext(str(path))[1].lower()
        if ext not in _EXTENSIONS:
            raise ValueError(f"cannot tell the file format from {str(path)!r}: give "
                             f"format='WAV', 'FLAC' or 'OGG' (or a name ending in "
                             f"{', '.join(sorted(_EXTENSIONS))})")
        format = _EXTENSIONS[ext]
    format = format.upper()
    if subtype is None:
        if (format, dtype) not in _SUBTYPES:
            raise ValueError(f"format must be 'WAV', 'FLAC' or 'OGG' (or give subtype=), "
                             f"not {format!r}")
        subtype = _SUBTYPES[format, dtype]
    return format, subtype.upper()


def _check_format_names(path: str, format: str | None, subtype: str | None) -> None:
    """Refuse, at construction, a format or subtype libsndfile does not know (the full check
    against the engine's dtype comes at open, when the dtype is known)."""
    import soundfile as sf

    if format is not None and format.upper() not in sf.available_formats():
        raise ValueError(f"format {format!r} is not one libsndfile writes: "
                         f"{', '.join(sorted(sf.available_formats()))}")
    if subtype is not None and subtype.upper() not in sf.available_subtypes():
        raise ValueError(f"subtype {subtype!r} is not one libsndfile knows: "
                         f"{', '.join(sorted(sf.available_subtypes()))}")
    if format is None and subtype is not None:
        choose_format(path, None, subtype, "float32")  # the extension must say the format


class FileSink(Sink):
    """Write the engine's output to ``path`` (``Engine(sink=FileSink('out.wav'))``).

    Parameters
    ----------
    path : str or os.PathLike
        The file to create (truncated if it exists).
    format : str or None
        'WAV', 'FLAC' or 'OGG'; None: from the extension.
    subtype : str or None
        A soundfile subtype; None: lossless for the engine's dtype where the format allows
        it (float32 WAV is FLOAT, int16 is PCM_16; FLAC has no float: PCM_24).
    realtime : bool
        Pace at the sample rate, as a device would (the file is what it would have heard,
        silence included).  False: as fast as the disk takes it, and only what the voices
        play (no silence before, between or after them; see ``Engine.drain()``).

    Raises
    ------
    TypeError
        ``path`` is not a path, or ``format`` or ``subtype`` is not a str.

    Notes
    -----
    The writer is a normal (SCHED_OTHER) Python thread, the output ring's single reader from
    :meth:`start` until :meth:`stop` returns; it calls ``context.period_consumed()`` once per
    period written.  The engine drives the life cycle from one Python thread.
    """

    name = "file"
    _file: Any = None
    _fd = -1

    def __init__(self, path: str | os.PathLike[str], format: str | None = None,
                 subtype: str | None = None, realtime: bool = False) -> None:
        try:
            self.path = os.fspath(path)
        except TypeError:
            raise TypeError(f"path must be a str or os.PathLike, not "
                            f"{type(path).__name__}") from None
        if isinstance(self.path, bytes):
            raise TypeError("path must be a str or os.PathLike of str, not bytes")
        for name, value in (("format", format), ("subtype", subtype)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
        _check_format_names(self.path, format, subtype)
        self.format = format
        self.subtype = subtype
        self.realtime = bool(realtime)
        self.timing = "clock" if self.realtime else "reader"
        self.error: str | None = None
        self.frames_written = 0
        self.periods_written = 0
        self.waits = 0           # times the writer found less than a period and waited
        self.write_ns = 0        # time spent inside soundfile writes
        self._cause: BaseException | None = None
        self._raised = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Serialises start/stop/drain/close from any thread; never held while joining the
        # writer (which may be stopping the engine, and so this sink, itself).
        self._lock = threading.RLock()
        self._started_ns = 0
        self._stopped_ns = 0

    # ---- life cycle (driven by the engine) --------------------------------------------------

    def open(self, context: SinkContext) -> None:
        """Check the format and the directory, and create the file.

        Parameters
        ----------
        context : SinkContext
            The engine's output ring (the writer reads it) and format.

        Raises
        ------
        ValueError
            The format cannot be told from the name, or soundfile cannot write that format
            and subtype.
        SinkError
            The directory does not exist, or the file cannot be created.

        Notes
        -----
        Called by ``Engine.start()`` in its thread, before the mixer runs.  The figures and
        a failure of an earlier engine's run are forgotten (the file starts again).
        """
        sf = _sf()
        self.context = context
        self.error, self._cause, self._raised = None, None, False
        self.frames_written = self.periods_written = self.waits = self.write_ns = 0
        self._taken = 0  # frames taken from this engine's output ring (written or skipped)
        self._started_ns = self._stopped_ns = 0
        fmt, subtype = choose_format(self.path, self.format, self.subtype, context.dtype.name)
        if not sf.check_format(fmt, subtype):
            raise ValueError(f"soundfile cannot write {fmt} with subtype {subtype}; "
                             f"{fmt} takes {sorted(sf.available_subtypes(fmt))}")
        self.format, self.subtype = fmt, subtype
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise SinkError(f"cannot write {self.path!r}: the directory {directory!r} does "
                            f"not exist")
        try:
            # Our own fd, so the writer can fstat it: a file whose directory was removed
            # takes writes happily and vanishes at close, which must be reported too.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                               0o666)
            self._file = sf.SoundFile(self._fd, "w", samplerate=context.samplerate,
                                      channels=context.channels, subtype=subtype, format=fmt,
                                      closefd=False)
        except (sf.LibsndfileError, OSError) as e:
            self._close_fd()
            raise SinkError(f"cannot create {self.path!r} ({fmt}, {subtype}): {e}") from e

    def start(self) -> None:
        """Start the writer thread; refused after a failure (the file is incomplete).

        Raises
        ------
        SinkError
            Writing failed earlier.
        EngineClosedError
            The sink's engine is closed (or no engine opened the sink).

        Notes
        -----
        Called by ``Engine.start()`` in its thread; again after a stop (the file goes on).
        """
        with self._lock:
            if self.error is not None:
                raise SinkError(self.error)
            if self._file is None:
                raise EngineClosedError("the file sink is not open: its engine is closed (or "
                                        "no engine opened it)")
            if self._thread is not None:
                return
            self._stopping.clear()
            if not self._started_ns:
                self._started_ns = time.monotonic_ns()
            self._stopped_ns = 0
            self._thread = threading.Thread(target=self._run, name="streamcore-file-sink",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the writer after the period it is writing (idempotent).

        Notes
        -----
        Called by ``Engine.stop()``, from the engine's caller's thread or the writer thread
        after a failure; the engine then stops the mixer and calls :meth:`drain` for what is
        left in the ring.
        """
        self._stopping.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._stopped_ns == 0 and self._started_ns:
            self._stopped_ns = time.monotonic_ns()

    def drain(self) -> None:
        """After the mixer stopped: write every frame still in the ring (nothing rendered is lost).

        Notes
        -----
        Called by ``Engine.stop()`` in its thread, with the writer stopped; it becomes the
        ring's reader.  A write error is kept in :attr:`error` and raised by :meth:`close`.
        """
        with self._lock:
            if self._file is None or self.error is not None or self.context is None:
                return
            ring = self.context.output
            while ring.readable:
                frames = self._allowed(ring.readable)
                if frames == 0:  # past the run's end: the rest of its period, not the file's
                    self._taken += ring.readable
                    ring.release(ring.readable)
                    return
                if not self._write(ring, frames):
                    return

    def _allowed(self, frames: int) -> int:
        """Of ``frames`` readable, how many may be written: all, or up to the run's end."""
        context = self.context
        if context is None or context.closed:
            return frames
        limit = context.deliverable()
        if limit is None:
            return frames
        # _taken is the ring's read index: the run's frame 0 is at run_start
        return max(0, min(frames, limit + context.run_start() - self._taken))

    def close(self) -> None:
        """Finalise the file (the header, fsync) and close it; idempotent.

        Raises
        ------
        SinkError
            Once, when writing or finalising failed, or the file lost its name on disk (the
            cause is chained).

        Notes
        -----
        Called by ``Engine.close()`` in its thread.
        """
        self.stop()
        with self._lock:
            f, self._file = self._file, None
            if f is not None:
                try:
                    f.close()
                    os.fsync(self._fd)
                except Exception as e:  # libsndfile rewrites the header here: a disk error
                    self._fail(f"finalising {self.path!r} failed: {e}", e)
                self._check_linked()
            self._close_fd()
            if self.error is not None and not self._raised:
                self._raised = True
                raise SinkError(self.error) from self._cause

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _check_linked(self) -> bool:
        """False (and the error set) when the file no longer has a name on disk."""
        try:
            removed = os.fstat(self._fd).st_nlink == 0
        except OSError as e:
            self._fail(f"checking {self.path!r} failed: {e}", e)
            return False
        if removed:
            self._fail(f"{self.path!r} was removed while being written (its directory "
                       f"deleted?); the {self.frames_written} frames written are lost",
                       FileNotFoundError(self.path))
        return not removed

    # ---- the writer (a normal thread) -------------------------------------------------------

    def _fail(self, message: str, cause: BaseException) -> None:
        if self.error is None:
            self.error = message
            self._cause = cause

    def _write(self, ring: Any, frames: int) -> bool:
        """Write ``frames`` frames from the ring's read side; False after a failure."""
        view = ring.read_view(frames)
        k = view.shape[0]
        t0 = time.monotonic_ns()
        try:
            written = self._file.buffer_write(view, dtype=ring.dtype.name)
            if written is not None and written != k:
                raise OSError(f"wrote {written} of {k} frames")
        except Exception as e:
            text = str(e) or type(e).__name__
            self._fail(f"writing {self.path!r} failed after {self.frames_written} frames: "
                       f"{text}", e)
            return False
        self.write_ns += time.monotonic_ns() - t0
        ring.release(k)
        self.frames_written += k
        self._taken += k
        return True

    def _run(self) -> None:
        context = self.context
        assert context is not None  # start() runs after open()
        ring = context.output
        block = context.blocksize
        rate = context.samplerate
        start = time.monotonic()
        written_at_start = self.frames_written  # a restart paces from here
        next_check = start + 0.25
        while not self._stopping.is_set():
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.25
                if not self._check_linked():
                    context.fail(self.error or "the file lost its name")
                    return
            readable = self._allowed(ring.readable)
            periods = readable // block
            if periods == 0 and 0 < readable < ring.readable:
                # cut short by the run's end (or the last voice's last frame so far): a piece
                # shorter than a period, written as it is
                if not self._write(ring, readable):
                    context.fail(self.error or "writing failed")
                    return
                continue
            if periods == 0:
                self.waits += 1
                time.sleep(0.0002)  # the mixer renders within microseconds of our signal
                continue
            if self.realtime:
                due = start + (self.frames_written - written_at_start + block) / rate
                delay = due - time.monotonic()
                if delay > 0:
                    self._stopping.wait(delay)
                    continue
                periods = 1
            if not self._write(ring, periods * block):
                context.fail(self.error or "writing failed")
                return
            self.periods_written += periods
            for _ in range(periods):
                context.period_consumed()

    # ---- figures ----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Frames and periods written, waits for the mixer, time spent writing and the rate.

        Returns
        -------
        dict of str to Any
            ``path``, ``format``, ``subtype``, ``realtime``, ``frames``, ``periods``,
            ``waits`` (times the writer found less than a period), ``write_ns`` (ns inside
            soundfile), ``elapsed`` (s since start), ``frames_per_second`` (frames per second
            of wall time) and ``error``.

        Notes
        -----
        Any thread; the counters are plain attributes the writer updates.
        """
        end = self._stopped_ns or time.monotonic_ns()
        elapsed = (end - self._started_ns) / 1e9 if self._started_ns else 0.0
        return {"name": self.name, "error": self.error, "path": self.path,
                "format": self.format, "subtype": self.subtype, "realtime": self.realtime,
                "frames": self.frames_written, "periods": self.periods_written,
                "waits": self.waits, "write_ns": self.write_ns, "elapsed": elapsed,
                "frames_per_second": self.frames_written / elapsed if elapsed else 0.0}
