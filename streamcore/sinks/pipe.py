"""PipeSink: the engine's output into a pipe, a FIFO, a file, a socket or stdout, exactly.

Streams have ends.  The sink is not a clock (unless paced): the engine renders only what its
voices play, with no silence before the first voice or while idle, and after
``Engine.drain()`` the stream ends exactly at the last voice's last frame.  A regular file's
WAV header gets its real sizes at each stop; a pipe keeps the streaming header.

Pacing.  ``pace='reader'`` (the default) hands audio over as fast as the reader takes it: a
file, an encoder, ``sox``.  ``pace='realtime'`` hands it over at the sample rate, a little
ahead of the clock: a live stream, ``ffmpeg -f rtp``, anything that sends it on in real time.

Zero copy.  A page handed to a pipe with vmsplice stays referenced by the pipe: rewriting it
would change what the reader gets.  The sink releases a page back to the mixer only once it
has left every pipe it went into (only the last FIONREAD bytes we sent can still be there,
whatever the pipe's size, also after its reader enlarged it).  But a reader that splices or
tees the pages onward (``pv``, a splice relay) takes them along still referenced, and nothing
on our side can see that.  So:

- into a regular file, zero copy is the default and always safe: the pages go through the
  sink's own relay pipe, and splice() into a file copies them into the page cache;
- into a pipe, a copy (write()) is the default; ``zero_copy=True`` hands the ring's own pages
  to the pipe, for readers known to read() them (aplay, sox, ffmpeg, Python), never for one
  that splices onward;
- a socket, terminal or device is always written with write().

``stats()['zero_copy']`` and ``['copy_reason']`` say which path runs and why.

Who writes.  Straight into a pipe (no tee) the engine's mixer thread is the writer: each
cycle it hands over what it rendered, as much as the pipe takes without blocking, and waits
in poll() while the pipe is full (``stats()['writer']`` 'mixer').  A file, a tee or a socket
has a C writer thread of its own ('thread', not realtime).  ``tee=`` names a second consumer
(record while playing) that gets the same bytes.
"""

from __future__ import annotations

import fcntl
import os
import stat
import threading
from typing import IO, Any, cast

import numpy as _np

from streamcore import wav as _wav
from streamcore._native import ffi as _ffi
from streamcore._native import lib as _lib
from streamcore.errors import EngineClosedError, SinkError, StreamcoreError, check
from streamcore.pipes import PAGE_SIZE, pipe_size, set_pipe_size, writable_fd
from streamcore.sinks.base import Sink, SinkContext

__all__ = ["PipeSink"]

# Raw formats and the output dtype each needs; 'wav' takes ``dtype`` (int16 by default).
_RAW = {"s16le": "int16", "s32le": "int32", "f32le": "float32"}


class PipeSink(Sink):
    """Write the engine's output to a pipe, a FIFO, a file or stdout.

    Parameters
    ----------
    target : int, file object, or 'stdout'
        Where the stream goes.  The sink never closes a descriptor it did not open.
    format : 'wav', 's16le', 's32le' or 'f32le'
        'wav' writes a streaming WAV header, then samples of ``dtype``; into a regular
        file the header's sizes are made exact at each stop.
    dtype : 'int16', 'int32' or 'float32'
        Sample type for 'wav' (raw formats imply theirs).  The engine renders in this dtype,
        so no conversion (and no copy) is needed on the way out.
    pipe_size : int, optional
        Bytes to ask F_SETPIPE_SZ for.  Default: one page, or one period if larger.  The
        engine's output latency is two pipe sizes.
    zero_copy : bool or None
        None: zero copy into a regular file, a copy into anything else.  True: also hand a
        pipe the ring's own pages (only for readers that read() them: never ``pv`` or
        another reader that splices onward).  False: always write().
    pace : 'reader' or 'realtime'
        'reader': as fast as the reader takes it.  'realtime': at the sample rate (live
        streams, network senders such as ``ffmpeg -f rtp``).
    tee : int or file object, optional
        A second consumer of the same bytes (see the module docstring).  Never closed by the
        sink.

    Raises
    ------
    ValueError
        An unknown ``format``, a ``dtype`` the format cannot carry, a bad ``pipe_size``, a
        ``target`` string other than 'stdout', a descriptor that is not open or not
        writable, or ``tee`` equal to the target.
    TypeError
        ``target`` or ``tee`` is neither a descriptor nor a file object.

    Notes
    -----
    Threads: straight into a pipe with zero copy, the engine's mixer thread writes the pipe
    itself (``stats()['writer']`` 'mixer'); otherwise a C thread of the sink does ('thread',
    not realtime).  The writer is the output ring's single reader from :meth:`start` to
    :meth:`stop`, the pipe's reader is its clock, and stop() ends it even if the reader
    stalls.
    A normal Python monitor thread notices when the writer ended on its own.  A reader that
    goes away (EPIPE) ends the sink: ``error`` says so, the engine stops, the process lives.
    """

    name = "pipe"
    _native = _ffi.NULL  # class-level NULL: close() is safe after a failed open()

    def __init__(self, target: int | IO[Any] | str = "stdout", format: str = "wav",
                 dtype: str | None = None, pipe_size: int | None = None,
                 zero_copy: bool | None = None, tee: int | IO[Any] | None = None,
                 pace: str = "reader") -> None:
        if not isinstance(format, str):
            raise ValueError(f"format must be 'wav', 's16le', 's32le' or 'f32le', not "
                             f"{format!r}")
        if dtype is not None:
            try:
                dtype = _np.dtype(dtype).name
            except TypeError:
                raise ValueError(f"dtype must be 'int16', 'int32' or 'float32', not "
                                 f"{dtype!r}") from None
        if format in _RAW:
            if dtype is not None and dtype != _RAW[format]:
                raise ValueError(f"dtype: format {format!r} carries {_RAW[format]}, not {dtype}")
            dtype = _RAW[format]
        elif format == "wav":
            dtype = _np.dtype(dtype or "int16").name
            if dtype not in _wav.TAGS:
                raise ValueError(f"dtype: a WAV stream carries int16, int32 or float32, not "
                                 f"{dtype}")
        else:
            raise ValueError(f"format must be 'wav', 's16le', 's32le' or 'f32le', not {format!r}")
        if pace not in ("reader", "realtime"):
            raise ValueError(f"pace must be 'reader' or 'realtime', not {pace!r}")
        if zero_copy is not None and not isinstance(zero_copy, bool):
            raise TypeError(f"zero_copy must be True, False or None, not {zero_copy!r}")
        if pipe_size is not None and (isinstance(pipe_size, bool) or not isinstance(
                pipe_size, int) or not 0 < pipe_size < 1 << 31):
            raise ValueError(f"pipe_size must be a positive number of bytes, not {pipe_size!r}")
        self.format = format
        self.dtype = dtype
        self.requested_pipe_size = pipe_size
        self.fd = writable_fd(target)
        self.kind = self._kind(self.fd)
        self.tee_fd = None if tee is None else writable_fd(tee, "tee")
        if self.tee_fd is not None and self.tee_fd == self.fd:
            raise ValueError("tee must be another descriptor than the target")
        self.pace = pace
        self.timing = "paced" if pace == "realtime" else "reader"
        tee_kind = None if self.tee_fd is None else self._kind(self.tee_fd)
        self.zero_copy = bool(zero_copy)
        self.copy_reason = None if zero_copy else "zero_copy=False was asked"
        if zero_copy is None:
            self.zero_copy = self.kind == "file" and tee_kind != "pipe"
            self.copy_reason = None if self.zero_copy else (
                "the default for a pipe: its reader might splice the pages onward (pv does), "
                "and a later period would then change audio it still holds; zero_copy=True "
                "for a reader known to read() them" if "pipe" in (self.kind, tee_kind) else
                "the target is neither a pipe nor a regular file")
        if self.zero_copy and self.kind == "other":
            self.zero_copy = False
            self.copy_reason = ("the target is neither a pipe nor a regular file (a socket or "
                                "device may hold spliced pages after we reuse them)")
        self._internal: tuple[int, int] | None = None  # (read, write) of our pipe, file targets
        self.half_frames = 0
        self.pipe_bytes = 0
        self.error: str | None = None
        self._final: dict[str, Any] | None = None
        self._header_at: int | None = None  # a regular file's offset of the WAV header
        self._raised = False  # the failure was raised by close() already
        self._tee_copy: bool | None = None  # set by open()
        self._monitor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ring_keepalive: object = None  # keeps the output ring's C handle valid
        # Serialises the native writer's life (create, start, stop, destroy) against stats()
        # from any thread; never held while waiting for the monitor or the engine.
        self._lock = threading.RLock()

    @staticmethod
    def _kind(fd: int) -> str:
        mode = os.fstat(fd).st_mode
        if stat.S_ISFIFO(mode):
            return "pipe"
        if stat.S_ISREG(mode):
            return "file"
        return "other"

    # -- the engine asks these before it makes its output ring ---------------------------

    def output_format(self, blocksize: int, channels: int) -> tuple[str, int | None]:
        """The (dtype, periods) the engine's output ring must have for this stream.

        Zero copy renders into two halves of the pipe's size, in whole periods: the pipe is
        sized here (F_SETPIPE_SZ); a reader may resize it later (pages are released by
        FIONREAD, whatever the size).  When the size is no whole number of periods the sink
        falls back to copying (``copy_reason`` says why) and asks for no particular periods.
        A copy honours an explicit ``pipe_size`` and needs no particular periods.

        Parameters
        ----------
        blocksize : int
            The engine's period, in frames.
        channels : int
            The engine's channels.

        Returns
        -------
        tuple of (str, int or None)
            The stream's dtype, and the periods two pipe-sized halves hold (None when
            copying).

        Raises
        ------
        StreamcoreError
            A ``pipe_size`` was given and F_SETPIPE_SZ refused it.

        Notes
        -----
        Asked once by the engine's constructor, in its thread.
        """
        frame_bytes = channels * _np.dtype(self.dtype).itemsize
        if not self.zero_copy:
            if self.requested_pipe_size is not None and self.kind == "pipe":
                # A copy needs no particular size, but one asked for is honoured.
                self.pipe_bytes = set_pipe_size(self.fd, self.requested_pipe_size)
            return self.dtype, None
        tee_is_pipe = self.tee_fd is not None and self._kind(self.tee_fd) == "pipe"
        pipe_fd = self.fd
        if self.kind == "file" or tee_is_pipe:
            if self._internal is not None and self._native == _ffi.NULL:
                for fd in self._internal:  # left by an engine whose constructor failed
                    os.close(fd)
            self._internal = os.pipe()  # the relay: our pages go in here, then on
            pipe_fd = self._internal[1]
        wanted = self.requested_pipe_size or max(PAGE_SIZE, blocksize * frame_bytes)
        try:
            got = set_pipe_size(pipe_fd, wanted)
        except StreamcoreError as e:
            if self.requested_pipe_size is not None:
                raise
            got = pipe_size(pipe_fd)
            note = f" (F_SETPIPE_SZ to {wanted} failed: {e})"
        else:
            note = ""
        # Every pipe a half passes through must be exactly a half: the target behind the relay,
        # and the tee pipe (else the tee gets copies; C checks the size too).
        for other in ([self.fd] if self._internal and self.kind == "pipe" else []) + \
                ([self.tee_fd] if tee_is_pipe else []):
            try:
                size = set_pipe_size(cast(int, other), got)  # tee_is_pipe: not None
            except StreamcoreError as e:
                size, note = -1, note + f" (sizing descriptor {other}: {e})"
            if size != got and other == self.fd:
                note += f" (the target pipe came out {size} B, not {got} B)"
                got = -1
        if got < 0 or got % frame_bytes or (got // frame_bytes) % blocksize:
            self.zero_copy = False
            self.copy_reason = (f"the pipe's size {got} B is not a whole number of "
                                f"{blocksize}-frame periods of {frame_bytes} B frames{note}"
                                if got >= 0 else f"the pipes could not be sized alike{note}")
            return self.dtype, None
        self.pipe_bytes = got
        self.half_frames = got // frame_bytes
        periods = 2 * self.half_frames // blocksize
        return self.dtype, periods

    # -- life cycle ------------------------------------------------------------------------

    def open(self, context: SinkContext) -> None:
        """Check the engine's format and ring, create the native writer, queue the WAV header.

        Parameters
        ----------
        context : SinkContext
            The engine's output ring (the writer hands its pages to the pipe), native handle
            and format.

        Raises
        ------
        StreamcoreError
            The sink is already open (one engine per sink), or the engine's ring is not two
            pipe-sized halves.
        ValueError
            The engine renders another dtype than the stream carries.
        NativeError
            The native writer could not be created.

        Notes
        -----
        Called by ``Engine.start()`` in its thread, before the mixer runs.  A sink closed
        with its first engine may be opened by another (the figures start again).
        """
        with self._lock:
            if self._native != _ffi.NULL:
                raise StreamcoreError("this PipeSink is already open; give each engine its "
                                      "own")
            super().open(context)
            self.error, self._final, self._raised = None, None, False
            if context.dtype.name != self.dtype:
                raise ValueError(f"the engine renders {context.dtype.name} but this "
                                 f"{self.format} stream carries {self.dtype}: "
                                 f"Engine(dtype={self.dtype!r})")
            pipe_fd, relay, onward = self.fd, -1, -1
            if self._internal is not None and self.zero_copy:
                relay, pipe_fd = self._internal
                onward = self.fd
            tee = -1 if self.tee_fd is None else self.tee_fd
            output = context.output
            if self.zero_copy and output.capacity != 2 * self.half_frames:
                raise StreamcoreError(
                    f"the engine's output ring holds {output.capacity} frames; the pipe "
                    f"sink needs exactly {2 * self.half_frames} (two pipe-sized halves)")
            out = _ffi.new("sc_pipe_sink **")
            # The ring handle stays valid while _ring_keepalive is referenced (Ring contract).
            ring, keepalive = output.native_handle()
            check(_lib.sc_pipe_sink_create(out, context.engine_handle, ring, pipe_fd, relay,
                                           onward, tee, self.half_frames, context.blocksize,
                                           int(self.zero_copy)), "creating the pipe sink")
            self._native, self._ring_keepalive = out[0], keepalive
            if self.pace == "realtime":  # a little ahead of the clock: the ring's worth
                check(_lib.sc_pipe_sink_pace(self._native, context.samplerate,
                                             output.capacity), "pacing the pipe sink")
            # Whether the tee gets a copy (write()) or the pages (tee()), decided now: the
            # caller may close the tee descriptor once the engine is closed, and stats()
            # must still answer (it read the descriptor each time and raised EBADF).
            self._tee_copy = None if self.tee_fd is None else not (
                self.zero_copy and self._kind(self.tee_fd) == "pipe"
                and pipe_size(self.tee_fd) == self.pipe_bytes)
            # Where the stream begins in a regular file, for the header's sizes at each stop.
            self._header_at = (os.lseek(self.fd, 0, os.SEEK_CUR) if self.format == "wav"
                               and self._seekable_file() else None)
            if self.format == "wav":
                header = _wav.header(context.samplerate, context.channels, self.dtype)
                check(_lib.sc_pipe_sink_prefix(self._native, header, len(header)),
                      "WAV header")

    def native_driver(self) -> Any:
        """The native driver by which the mixer writes the pipe itself, or None.

        Returns
        -------
        cffi pointer or None
            The ``sc_driver *`` when the mixer is the writer (zero copy straight into a
            pipe, no tee); None when a C thread of the sink writes (a file, a tee, copies).

        Notes
        -----
        Called by ``Engine.start()`` after :meth:`open`.
        """
        with self._lock:
            if self._native == _ffi.NULL:
                return None  # not open: start() says so
            driver = _lib.sc_pipe_sink_driver(self._native)
            return None if driver == _ffi.NULL else driver

    def start(self) -> None:
        """Start the C writer thread (unless the mixer writes) and the Python monitor thread.

        Raises
        ------
        EngineClosedError
            The sink's engine is closed (or no engine opened the sink).
        NativeError
            The writer thread could not be started.

        Notes
        -----
        Called by ``Engine.start()`` in its thread, once the ring is full; again after a
        stop (the stream goes on where it stopped).
        """
        with self._lock:
            if self._native == _ffi.NULL:
                raise EngineClosedError("the pipe sink is not open: its engine is closed (or "
                                        "no engine opened it)")
            check(_lib.sc_pipe_sink_start(self._native), "starting the pipe sink")
            self._stopping.clear()
            self._monitor = threading.Thread(target=self._watch, args=(self._native,),
                                             name="streamcore-pipe-monitor", daemon=True)
            self._monitor.start()

    def _watch(self, native: Any) -> None:
        """A normal thread: when the C writer ended on its own (reader gone, write error), say
        so and stop the engine, so nobody waits for a voice that can no longer play.

        ``native`` stays valid until stop() has joined this thread; no lock is taken here
        (stop() may hold it while it waits for the writer)."""
        raw = _ffi.new("sc_pipe_sink_stats *")
        while not self._stopping.wait(0.05):
            _lib.sc_pipe_sink_get_stats(native, raw)
            if raw.finished:
                self._read_stats(native)  # sets self.error from the errno
                context = self.context
                if context is not None:
                    context.fail(self.error or "the pipe writer ended")
                return

    def stop(self) -> None:
        """Stop writing; what the mixer already rendered is written out first.

        Unless the reader is gone or stalls: the C writer is woken either way.

        Notes
        -----
        Idempotent.  Called by ``Engine.stop()``, from the engine's caller's thread or the
        monitor thread after a failure.
        """
        self._stopping.set()
        monitor, self._monitor = self._monitor, None
        if monitor is not None and monitor is not threading.current_thread():
            monitor.join()  # the monitor itself may be the caller (a failure stops the engine)
        with self._lock:
            if self._native != _ffi.NULL:
                _lib.sc_pipe_sink_stop(self._native, 1)
                self._final = self._read_stats(self._native)
                self._fix_wav_header(self._final["bytes"])

    def _seekable_file(self) -> bool:
        """A regular file we may write at an offset (not O_APPEND, where pwrite appends)."""
        return (stat.S_ISREG(os.fstat(self.fd).st_mode)
                and not fcntl.fcntl(self.fd, fcntl.F_GETFL) & os.O_APPEND)

    def _fix_wav_header(self, written: int) -> None:
        """A regular file gets the real RIFF and data sizes once the writer stopped (a pipe
        keeps the streaming header: its readers play to end of input).  Done at every stop,
        so the file is valid between runs too; a stream past 4 GiB keeps 0xFFFFFFFF."""
        if self._header_at is None:
            return
        problem = _wav.fix_sizes(self.fd, self._header_at, written)
        if problem is not None and self.error is None:
            self.error = problem

    def close(self) -> None:
        """Stop, free the native writer and close the sink's own relay pipe; idempotent.

        Raises
        ------
        SinkError
            The stream failed (the reader went away, a write failed): once, after everything
            is freed, like :class:`~streamcore.sinks.FileSink`.

        Notes
        -----
        Called by ``Engine.close()`` in its thread.  The target and ``tee`` descriptors are
        never closed by the sink.  Another engine may open the sink afterwards.
        """
        self.stop()
        with self._lock:
            if self._native != _ffi.NULL:
                _lib.sc_pipe_sink_destroy(self._native)
                self._native = _ffi.NULL
            self._ring_keepalive = None
            if self._internal is not None:
                for fd in self._internal:
                    os.close(fd)
                self._internal = None
            if self.error is not None and not self._raised:
                self._raised = True  # once, like FileSink: everything is freed by now
                raise SinkError(self.error)

    # -- figures ---------------------------------------------------------------------------

    def _read_stats(self, native: Any) -> dict[str, Any]:
        raw = _ffi.new("sc_pipe_sink_stats *")
        _lib.sc_pipe_sink_get_stats(native, raw)
        if raw.error and self.error is None:
            self.error = ("the pipe's reader went away (EPIPE)" if raw.error == 32 else
                          f"writing to the pipe failed: {os.strerror(raw.error)}")
        return {"bytes": raw.bytes, "halves": raw.halves, "writes": raw.writes,
                "periods": raw.periods, "reader_waits": raw.reader_waits,
                "mixer_waits": raw.mixer_waits, "running": bool(raw.running),
                "finished": bool(raw.finished), "writer": "mixer" if raw.by_mixer else "thread",
                "paced": bool(raw.paced), "resized": raw.resized,
                "run_complete": bool(raw.run_complete)}

    def delivered(self, end_frame: int) -> bool:
        """After ``Engine.drain()``: whether the run up to ``end_frame`` is in the pipe or file.

        Also True once the writer ended (nothing more will go).

        Parameters
        ----------
        end_frame : int
            The run's end.

        Returns
        -------
        bool

        Notes
        -----
        Called by ``Engine.drain()`` in its thread.
        """
        with self._lock:
            if self._native == _ffi.NULL:
                return True
            raw = _ffi.new("sc_pipe_sink_stats *")
            _lib.sc_pipe_sink_get_stats(self._native, raw)
            return bool(raw.run_complete or raw.finished)

    def stats(self) -> dict[str, Any]:
        """The writer's figures and which path (zero copy or not) runs, and why.

        Returns
        -------
        dict of str to Any
            ``bytes``, ``halves``, ``writes``, ``periods``, ``reader_waits``,
            ``mixer_waits``, ``running``, ``finished``, ``writer`` ('mixer' when the mixer
            writes the pipe itself, else 'thread'), ``format``, ``dtype``, ``target``
            ('pipe', 'file' or 'other'), ``zero_copy``, ``tee_copy``, ``copy_reason``,
            ``pipe_bytes`` (the pipe's size in bytes), ``paced``, ``resized`` (times a pipe
            holding our pages was found enlarged by its reader), ``run_complete`` (after a
            drain: all of the run went out) and ``error``.

        Notes
        -----
        Any thread; the writer's counters are read live.  The last figures stay readable
        after close.
        """
        with self._lock:
            figures = (self._read_stats(self._native) if self._native != _ffi.NULL
                       else (self._final or {}))
        return {**super().stats(), **figures, "format": self.format, "dtype": self.dtype,
                "target": self.kind, "zero_copy": self.zero_copy, "tee_copy": self._tee_copy,
                "copy_reason": self.copy_reason, "pipe_bytes": self.pipe_bytes,
                "error": self.error}
