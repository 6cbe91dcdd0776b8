"""The public API driven by Hypothesis from two threads at once, in any order (issue 13).

A RuleBasedStateMachine makes engines (null and manual sinks), rings and voices and calls
their methods; every rule's call runs on a second thread while the main thread makes another
call on a random object of the machine (stats, frame, trace, events, a voice's stats, or a
close), so every pair of public methods meets every other, concurrently with close().  The
only exceptions allowed are the documented ones (closed objects, full voice table, a ring
refused for a closed ring...).  Invariants: the process never dies (a crash ends the run),
every voice of a closed engine has ended with a reason, and after teardown no fd, thread,
ring mapping or locked byte of the machine's objects remains (read from /proc).
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
import time
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from streamcore import Engine, Ring
from streamcore.errors import (
    CommandQueueFullError,
    EngineClosedError,
    RingClosedError,
    VoiceLimitError,
)

# What a call may raise when another thread closed its object first, or the engine is full.
DOCUMENTED = (EngineClosedError, RingClosedError, VoiceLimitError, CommandQueueFullError)
END_REASONS = {"finished", "stopped", "flushed"}


def proc_resources() -> dict[str, int]:
    """What this process holds that the machine's objects could leak."""
    with open("/proc/self/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    with open("/proc/self/maps") as f:
        rings = sum("streamcore-ring" in line for line in f)
    return {"fds": len(os.listdir("/proc/self/fd")), "threads": len(os.listdir("/proc/self/task")),
            "ring_mappings": rings, "vmlck_kb": int(status["VmLck"].split()[0])}


class Side:
    """A second thread that runs one call at a time, handed over with `run`."""

    def __init__(self) -> None:
        self._work: Any = None
        self._ready = threading.Event()
        self._done = threading.Event()
        self._result: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="stateful-side")
        self._quit = False
        self._thread.start()

    def _main(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            if self._quit:
                return
            try:
                self._work()
                self._result = None
            except BaseException as e:  # handed back to the main thread
                self._result = e
            self._done.set()

    def run(self, fn: Any, alongside: Any) -> None:
        """fn() on the side thread while alongside() runs here; re-raise what fn raised."""
        self._work = fn
        self._done.clear()
        self._ready.set()
        with contextlib.suppress(*DOCUMENTED):
            alongside()
        if not self._done.wait(30):
            raise AssertionError("a call did not return within 30 s (hang)")
        if self._result is not None and not isinstance(self._result, DOCUMENTED):
            raise self._result

    def quit(self) -> None:
        self._quit = True
        self._ready.set()
        self._thread.join(5)


class Api(RuleBasedStateMachine):
    engines = Bundle("engines")
    rings = Bundle("rings")
    voices = Bundle("voices")

    @initialize()
    def setup(self) -> None:
        gc.collect()
        self.baseline = proc_resources()
        self.side = Side()
        self.all_engines: list[Engine] = []
        self.all_rings: list[Ring] = []
        self.all_voices: list[Any] = []
        self.engine_of: dict[int, Engine] = {}  # id(voice) -> its engine
        self.rng = np.random.default_rng(0)

    # -- helpers --------------------------------------------------------------------------
    def anything(self) -> None:
        """A call on a random object, for the main thread while the side thread works."""
        pool: list[Any] = self.all_engines + self.all_rings + self.all_voices
        if not pool:
            return
        obj = pool[int(self.rng.integers(len(pool)))]
        choice = int(self.rng.integers(6))
        if isinstance(obj, Engine):
            [lambda: obj.stats(), lambda: obj.frame, lambda: obj.trace(64), obj.events,
             lambda: obj.voices, obj.close][choice]()
        elif isinstance(obj, Ring):
            [lambda: obj.readable, lambda: obj.writable, lambda: obj.stats,
             lambda: obj.write(np.zeros((8, obj.channels), obj.dtype)),
             lambda: obj.read(4), obj.close][choice]()
        else:
            [obj.stats, lambda: obj.done, lambda: setattr(obj, "gain", 0.5),
             lambda: obj.wait(0), lambda: obj.stop(0.0), obj.stats][choice]()

    def keep(self, engine: Engine, voice: Any) -> None:
        if voice is not None:
            self.all_voices.append(voice)
            self.engine_of[id(voice)] = engine

    def both(self, fn: Any) -> Any:
        box: list[Any] = []
        self.side.run(lambda: box.append(fn()), self.anything)
        return box[0] if box else None

    # -- rules ----------------------------------------------------------------------------
    @rule(target=engines, sink=st.sampled_from(["null", "manual"]),
          blocksize=st.sampled_from([64, 128]))
    def create_engine(self, sink: str, blocksize: int) -> Any:
        e = Engine(sink=sink, blocksize=blocksize, realtime=False, lock_memory=False)
        self.all_engines.append(e)
        return e

    @rule(engine=engines)
    def start(self, engine: Engine) -> None:
        self.both(engine.start)

    @rule(engine=engines, frames=st.integers(1, 2000), loop=st.booleans(),
          gain=st.floats(-2, 2), pan=st.floats(-1, 1))
    def play(self, engine: Engine, frames: int, loop: bool, gain: float, pan: float) -> None:
        data = self.rng.standard_normal((frames, 2)).astype(np.float32) * 0.1
        voice = self.both(lambda: engine.play(data, gain=gain, pan=pan, loop=loop))
        self.keep(engine, voice)

    @rule(target=voices, engine=engines)
    def stream(self, engine: Engine) -> Any:
        voice = self.both(lambda: engine.stream(channels=2, frames=2048))
        self.keep(engine, voice)
        return voice

    @rule(voice=voices, frames=st.integers(1, 512))
    def write(self, voice: Any, frames: int) -> None:
        if voice is None:
            return
        self.both(lambda: voice.write(np.zeros((frames, 2), np.float32)))

    @rule(voice=voices, fade=st.sampled_from([0.0, 0.001, 0.01]))
    def stop_voice(self, voice: Any, fade: float) -> None:
        if voice is not None:
            self.both(lambda: voice.stop(fade))

    @rule(voice=voices, gain=st.floats(-3, 3), pan=st.floats(-1, 1))
    def set_gain_pan(self, voice: Any, gain: float, pan: float) -> None:
        if voice is None:
            return

        def change() -> None:
            voice.gain = gain
            voice.pan = pan

        self.both(change)

    @rule(target=rings)
    def make_ring(self) -> Ring:
        ring = Ring(1024, 2, "float32", lock=False)
        self.all_rings.append(ring)
        return ring

    @rule(engine=engines, ring=rings)
    def attach_ring(self, engine: Engine, ring: Ring) -> None:
        self.keep(engine, self.both(lambda: engine.stream(ring=ring)))

    @rule(ring=consumes(rings))
    def close_ring(self, ring: Ring) -> None:
        self.both(ring.close)

    @rule(engine=engines)
    def figures(self, engine: Engine) -> None:
        self.both(lambda: (engine.stats(), engine.frame, engine.trace(32), engine.events()))

    @rule(engine=engines, periods=st.integers(0, 8))
    def render(self, engine: Engine, periods: int) -> None:
        if engine.sink == "manual":
            self.both(lambda: engine.render(periods))

    @rule(engine=consumes(engines))
    def close_engine(self, engine: Engine) -> None:
        self.both(engine.close)

    # -- invariants -----------------------------------------------------------------------
    @invariant()
    def voices_of_closed_engines_have_ended(self) -> None:
        for voice in getattr(self, "all_voices", []):
            if self.engine_of[id(voice)].closed:
                assert voice.wait(5), f"{voice!r} of a closed engine never ended"
                assert voice.end_reason in END_REASONS, voice.end_reason

    def teardown(self) -> None:
        for e in getattr(self, "all_engines", []):
            e.close()
        for r in getattr(self, "all_rings", []):
            r.close()
        if not hasattr(self, "side"):
            return
        self.side.quit()
        for voice in self.all_voices:
            assert voice.wait(5) and voice.end_reason in END_REASONS
        self.all_engines.clear()
        self.all_rings.clear()
        self.all_voices.clear()
        self.engine_of.clear()
        deadline = time.monotonic() + 5
        while True:  # threads end a moment after their join returned
            gc.collect()
            now = proc_resources()
            if now == self.baseline or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert now == self.baseline, f"left behind: {now} vs {self.baseline}"


Api.TestCase.settings = settings(max_examples=80, stateful_step_count=40, deadline=None,
                                 suppress_health_check=[HealthCheck.too_slow])
TestApi = Api.TestCase
