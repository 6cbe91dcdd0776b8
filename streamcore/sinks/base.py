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

    Concurrency: the five methods are called by the engine from one Python thread at a
    time; the sink's own consuming thread (a PortAudio callback, a C or Python thread) is
    the ring's single reader from ``start()`` until ``stop()`` returns.
    """

    name: str = "sink"
    error: str | None = None
    engine: Any = None

    def output_format(self, blocksize: int, channels: int) -> tuple[str | None, int | None]:
        """(dtype, periods) the engine's output ring must have for this sink, each None where
        the sink has no need; asked once, when the engine is constructed, before its ring
        exists.  The pipe sink needs its own dtype (no conversion, so no copy) and exactly
        two pipe-sized halves."""
        return None, None

    def open(self, engine: Any) -> None:
        """Bind to ``engine`` (its ``output`` ring exists, the mixer is not running)."""
        self.engine = engine

    def start(self) -> None:
        """Begin consuming (the mixer already runs on the consumer clock).  Pairs with
        :meth:`stop`."""

    def stop(self) -> None:
        """Stop consuming; idempotent.  Called before the engine stops its mixer."""

    def drain(self) -> None:
        """After the mixer stopped: consume what is left in the ring, if the sink's contract
        says so (default: nothing)."""

    def close(self) -> None:
        """Release every resource; idempotent, and safe after a failed :meth:`open`."""

    def stats(self) -> dict[str, Any]:
        """Figures of the sink, merged into ``engine.stats().sink``."""
        return {"name": self.name, "error": self.error}

    def __repr__(self) -> str:
        state = f" error={self.error!r}" if self.error else ""
        return f"<{type(self).__name__} {self.name}{state}>"
