"""The sink protocol: what ``Engine(sink=...)`` accepts besides the built-in strings.

A sink consumes the engine's output ring on the *consumer clock* (the engine's
``sink='external'`` mode): it reads one period at a time from ``engine.output`` (single
reader), advances the ring, and then calls ``sc_engine_period_consumed(engine, underrun)``
(Python: ``engine.period_consumed()``), which wakes the mixer at once to render the next.

Life cycle, driven by the engine (every call from the Python thread that drives the engine):

1. ``open(engine)``: the engine's output ring exists (``engine.output``), the mixer is not
   running yet.  Prepare and validate here; raise a clear error (the engine then closes
   itself and re-raises).
2. ``start()``: the mixer runs on the consumer clock and has filled the ring; begin
   consuming.
3. ``stop()``: stop consuming (idempotent).  What is drained first is the sink's contract
   (the device sink drops what is queued; the file sink writes every rendered period).
   The engine calls it BEFORE it stops the mixer.
4. ``drain()`` (optional, default: nothing): called once the mixer has stopped; a sink
   that promises "nothing rendered is lost" (the file sink) consumes what is left in the
   ring here.  Not called after a failed ``open``.
5. ``close()``: release everything (idempotent; also after a failed ``open``).  A sink may
   raise here (e.g. :class:`~streamcore.errors.SinkError` for a write that failed earlier);
   the engine frees its own resources first.

When a sink fails on its own thread it sets ``error``, stops consuming, and calls
``engine._sink_failed(sink, abandon)`` (``abandon``: a threading.Event the sink sets in
``stop()``), which stops the engine from that thread unless someone else is already stopping
it; ``stop()`` must then not join the calling thread.

``stats()`` is merged into ``engine.stats().sink`` (a plain dict).  ``error`` is None until
the sink fails for good (reader gone, server died, disk full); it is a one-line sentence
saying what happened, and the sink has stopped consuming by then.  ``engine.stats().sink``
carries it as ``'error'``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Sink"]


class Sink:
    """A consumer of the engine's output ring (base class; subclasses override the hooks).

    Notes
    -----
    Concurrency: the life-cycle methods are called by the engine from one Python thread at a
    time; the sink's own consuming thread (a PortAudio callback, a C or Python thread) is
    the ring's single reader from ``start()`` until ``stop()`` returns.  ``name`` labels the
    sink, ``error`` is None until it fails for good, ``engine`` is set by :meth:`open`.
    """

    name: str = "sink"
    error: str | None = None
    engine: Any = None

    def output_format(self, blocksize: int, channels: int) -> tuple[str | None, int | None]:
        """The (dtype, periods) the engine's output ring must have for this sink.

        The pipe sink needs its own dtype (no conversion, so no copy) and exactly two
        pipe-sized halves; the base class needs nothing.

        Parameters
        ----------
        blocksize : int
            The engine's period, in frames.
        channels : int
            The engine's channels.

        Returns
        -------
        tuple of (str or None, int or None)
            The numpy dtype name of the samples and the periods in the ring, each None where
            the sink has no need.

        Notes
        -----
        Asked once by the engine's constructor, in its thread, before the ring exists.
        """
        return None, None

    def open(self, engine: Any) -> None:
        """Bind to ``engine`` (its ``output`` ring exists, the mixer is not running).

        Parameters
        ----------
        engine : Engine
            The engine whose ``output`` ring the sink will read.

        Notes
        -----
        Called by ``Engine.start()`` in its thread.  A sink raises here when it cannot run;
        the engine then closes the sink and re-raises.
        """
        self.engine = engine

    def native_driver(self) -> Any:
        """The sink's own native driver for the engine's mixer, or None (the default).

        A sink whose consumer the mixer thread itself can serve (the pipe sink, straight into
        a pipe: the mixer vmsplices what it rendered and waits for the reader) returns the
        ``sc_driver *`` of its native part; the engine gives it to ``sc_engine_start`` and
        uses it until it stops (see native/driver.h).  None: the engine runs on its consumer
        clock and the sink's own thread signals each period it took.

        Returns
        -------
        cffi pointer or None
            An ``sc_driver *`` that stays valid while the sink is open, or None.

        Notes
        -----
        Called by ``Engine.start()`` in its thread, after :meth:`open`, every start.
        """
        return None

    def start(self) -> None:
        """Begin consuming (the mixer already runs on the consumer clock); pairs with :meth:`stop`.

        Notes
        -----
        Called by ``Engine.start()`` in its thread, once the mixer has filled the ring.
        """

    def stop(self) -> None:
        """Stop consuming; idempotent.  Pairs with :meth:`start`.

        Notes
        -----
        Called by ``Engine.stop()`` before it stops the mixer, from the engine's caller's
        thread or from the sink's own thread after a failure (then it must not join itself).
        """

    def drain(self) -> None:
        """After the mixer stopped: consume what is left in the ring, if the sink promises it.

        Notes
        -----
        Called by ``Engine.stop()`` in its thread once the mixer has stopped; the default does
        nothing.  Not called after a failed :meth:`open`.
        """

    def close(self) -> None:
        """Release every resource; idempotent, and safe after a failed :meth:`open`.

        Notes
        -----
        Called by ``Engine.close()`` in its thread, after the engine stopped.  A sink may
        raise here (e.g. :class:`~streamcore.errors.SinkError` for a write that failed
        earlier); the engine still frees its own resources.
        """

    def stats(self) -> dict[str, Any]:
        """Figures of the sink, merged into ``engine.stats().sink``.

        Returns
        -------
        dict of str to Any
            At least ``name`` and ``error``.

        Notes
        -----
        Any thread (``Engine.stats()`` calls it under the engine's lock).
        """
        return {"name": self.name, "error": self.error}

    def __repr__(self) -> str:
        state = f" error={self.error!r}" if self.error else ""
        return f"<{type(self).__name__} {self.name}{state}>"
