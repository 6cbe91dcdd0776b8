"""Every public entry point turns a bad argument into TypeError/ValueError (or a
StreamcoreError subclass) that names the parameter: never a bare OverflowError,
AttributeError, a cffi error or a C status text (issue 13)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from streamcore import Engine, Ring, Watchdog, acquire_realtime, decode
from streamcore.errors import StreamcoreError
from streamcore.sinks import DeviceSink, FileSink, PipeSink

ARG_ERRORS = (TypeError, ValueError, StreamcoreError)
HUGE = 10**30  # past every C integer type: cffi would say OverflowError if it got there


class Ctx:
    """The objects a case calls into, made on demand and closed after the case."""

    def __init__(self) -> None:
        self._closers: list[Callable[[], None]] = []

    def engine(self, **kw: Any) -> Engine:
        kw.setdefault("sink", "manual")
        kw.setdefault("blocksize", 64)
        e = Engine(**kw)
        self._closers.append(e.close)
        return e

    def voice(self) -> Any:
        e = self.engine()
        return e.play(np.zeros((256, 2), np.float32), loop=True)

    def stream_voice(self) -> Any:
        return self.engine().stream(channels=2, frames=1024)

    def ring(self, **kw: Any) -> Ring:
        r = Ring(1024, 2, "float32", lock=False, **kw)
        self._closers.append(r.close)
        return r

    def pipe(self) -> int:
        r, w = os.pipe()
        self._closers.append(lambda: (os.close(r), os.close(w)))
        return w

    def close(self) -> None:
        for close in reversed(self._closers):
            close()


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[Ctx], Any]
    name: str  # the parameter the message must name


CASES: list[Case] = []


def case(id_: str, name: str, call: Callable[[Ctx], Any]) -> None:
    CASES.append(Case(id_, call, name))


# Values that are wrong for an integer count.
BAD_INTS = {"none": None, "str": "4", "float": 4.5, "nan": math.nan, "bool": True,
            "negative": -1, "huge": HUGE, "list": [4]}
# Values that are wrong for a finite number (gain, pan, seconds).
BAD_NUMBERS = {"none": None, "str": "1", "nan": math.nan, "inf": math.inf, "list": [1.0],
               "complex": 1j}

# ---- Engine(...) ---------------------------------------------------------------------------
for param in ("samplerate", "blocksize", "channels", "periods", "priority"):
    for tag, value in BAD_INTS.items():
        case(f"Engine-{param}-{tag}", param,
             lambda ctx, p=param, v=value: ctx.engine(**{p: v}))
    case(f"Engine-{param}-zero", param, lambda ctx, p=param: ctx.engine(**{p: 0}))
for tag, value in {"float64": "float64", "int": 5, "unknown": "int24", "none-list": [1]}.items():
    case(f"Engine-dtype-{tag}", "dtype", lambda ctx, v=value: ctx.engine(dtype=v))
for tag, value in {"unknown": "tape", "int": 5, "none": None, "list": ["null"]}.items():
    case(f"Engine-sink-{tag}", "sink", lambda ctx, v=value: ctx.engine(sink=v))
for tag, value in {"str": "yes", "int": 5, "dict": {}}.items():
    case(f"Engine-watchdog-{tag}", "watchdog", lambda ctx, v=value: ctx.engine(watchdog=v))
case("Engine-dither-float32", "dither", lambda ctx: ctx.engine(dither=True))

# ---- Engine.play(...) ----------------------------------------------------------------------
GOOD = np.zeros((64, 2), np.float32)
for tag, value in {"none": None, "list": [0.0, 0.1], "float64": np.zeros(8),
                   "int16": np.zeros(8, np.int16), "3d": np.zeros((2, 2, 2), np.float32),
                   "empty": np.zeros(0, np.float32), "3ch": np.zeros((8, 3), np.float32),
                   "strided": np.zeros((16, 2), np.float32)[::2],
                   "bytes": b"\0" * 32, "scalar": np.float32(0)}.items():
    case(f"play-array-{tag}", "array", lambda ctx, v=value: ctx.engine().play(v))
for param in ("gain", "pan", "fade_in"):
    for tag, value in BAD_NUMBERS.items():
        case(f"play-{param}-{tag}", param,
             lambda ctx, p=param, v=value: ctx.engine().play(GOOD, **{p: v}))
case("play-gain-range", "gain", lambda ctx: ctx.engine().play(GOOD, gain=100.0))
case("play-pan-range", "pan", lambda ctx: ctx.engine().play(GOOD, pan=1.5))
case("play-pan-mono-engine", "pan",
     lambda ctx: ctx.engine(channels=1).play(np.zeros(8, np.float32), pan=0.5))
case("play-fade_in-negative", "fade_in", lambda ctx: ctx.engine().play(GOOD, fade_in=-1.0))
for tag, value in {"negative": -1, "float": 1.5, "str": "0", "huge": HUGE, "nan": math.nan,
                   "bool": True}.items():
    case(f"play-at-{tag}", "at", lambda ctx, v=value: ctx.engine().play(GOOD, at=v))

# ---- Engine.stream(...) --------------------------------------------------------------------
for tag, value in {**BAD_INTS, "three": 3}.items():
    case(f"stream-channels-{tag}", "channels",
         lambda ctx, v=value: ctx.engine().stream(channels=v))
for tag, value in {**BAD_INTS, "zero": 0}.items():
    if tag == "none":
        continue  # frames=None means the default size
    case(f"stream-frames-{tag}", "frames", lambda ctx, v=value: ctx.engine().stream(frames=v))
for tag, value in {"str": "ring", "int": 5, "array": GOOD}.items():
    case(f"stream-ring-{tag}", "ring", lambda ctx, v=value: ctx.engine().stream(ring=v))
case("stream-ring-int16", "ring",
     lambda ctx: ctx.engine().stream(ring=ctx.ring(dtype="int16") if False else
                                     _ring(ctx, "int16")))
case("stream-ring-closed", "ring", lambda ctx: ctx.engine().stream(ring=_closed_ring(ctx)))
for param in ("gain", "pan", "fade_in"):
    for tag, value in BAD_NUMBERS.items():
        case(f"stream-{param}-{tag}", param,
             lambda ctx, p=param, v=value: ctx.engine().stream(**{p: v}))


def _ring(ctx: Ctx, dtype: str) -> Ring:
    r = Ring(1024, 2, dtype, lock=False)
    ctx._closers.append(r.close)
    return r


def _closed_ring(ctx: Ctx) -> Ring:
    r = Ring(1024, 2, "float32", lock=False)
    r.close()
    return r


# ---- render, stats, trace, subscribe, period_consumed ---------------------------------------
for tag, value in {**BAD_INTS, "too-many": 1 << 21}.items():
    case(f"render-periods-{tag}", "periods", lambda ctx, v=value: ctx.engine().render(v))
# (a count beyond the trace's slots is all of them, not an error)
for tag, value in {"negative": -1, "str": "5", "float": 2.5, "none": None}.items():
    case(f"trace-max_records-{tag}", "max_records",
         lambda ctx, v=value: ctx.engine().trace(v))
for tag, value in {"negative": -1.0, "str": "1", "nan": math.nan, "none-list": [1]}.items():
    case(f"stats-timeout-{tag}", "timeout",
         lambda ctx, v=value: ctx.engine(sink="null", realtime=False).stats(True, v))
for tag, value in {"none": None, "int": 5, "str": "print"}.items():
    case(f"subscribe-callback-{tag}", "callback",
         lambda ctx, v=value: ctx.engine().subscribe(v))

# ---- voices --------------------------------------------------------------------------------
for param in ("gain", "pan"):
    for tag, value in BAD_NUMBERS.items():
        case(f"Voice.{param}-{tag}", param,
             lambda ctx, p=param, v=value: setattr(ctx.voice(), p, v))
    case(f"Voice.{param}-range", param,
         lambda ctx, p=param: setattr(ctx.voice(), p, 99.0))
for tag, value in {**BAD_NUMBERS, "negative": -1.0}.items():
    case(f"Voice.stop-fade-{tag}", "fade", lambda ctx, v=value: ctx.voice().stop(v))
for tag, value in {"negative": -1.0, "str": "1", "nan": math.nan, "list": [1]}.items():
    case(f"Voice.wait-timeout-{tag}", "timeout", lambda ctx, v=value: ctx.voice().wait(v))
# A view is of up to n frames: asking for more than fit is not an error.
for tag, value in {"negative": -1, "str": "1", "float": 1.5, "none": None}.items():
    case(f"StreamVoice.write_view-{tag}", "frames",
         lambda ctx, v=value: ctx.stream_voice().write_view(v))
for tag, value in {"negative": -1, "str": "1", "float": 1.5, "huge": HUGE, "none": None,
                   "too-many": 1 << 20}.items():
    case(f"StreamVoice.commit-{tag}", "frames",
         lambda ctx, v=value: ctx.stream_voice().commit(v))
for tag, value in {"none": None, "str": "abc", "float64": np.zeros((4, 2)),
                   "3ch": np.zeros((4, 3), np.float32), "3d": np.zeros((2, 2, 2), np.float32)
                   }.items():
    case(f"StreamVoice.write-{tag}", "array", lambda ctx, v=value: ctx.stream_voice().write(v))

# ---- Ring ----------------------------------------------------------------------------------
for tag, value in {**BAD_INTS, "zero": 0}.items():
    case(f"Ring-frames-{tag}", "frames", lambda ctx, v=value: Ring(v, 2, "float32"))
    case(f"Ring-channels-{tag}", "channels", lambda ctx, v=value: Ring(64, v, "float32"))
for tag, value in {"float64": "float64", "int": 5, "unknown": "foo", "none-list": [1]}.items():
    case(f"Ring-dtype-{tag}", "dtype", lambda ctx, v=value: Ring(64, 2, v))
for tag, value in {"str": "maybe", "int": 5}.items():
    case(f"Ring-lock-{tag}", "lock", lambda ctx, v=value: Ring(64, 2, "float32", lock=v))
case("Ring-name-int", "name", lambda ctx: Ring(64, 2, "float32", name=5))
for method in ("write_view", "read_view", "commit", "release"):
    for tag, value in {"negative": -1, "str": "1", "float": 1.5, "huge": HUGE,
                       "none": None, "too-many": 1 << 20}.items():
        # A view is of up to n frames: asking for more than fit is not an error.
        if method in ("write_view", "read_view") and tag in ("none", "huge", "too-many"):
            continue
        name = "n" if method.endswith("view") else "k"
        case(f"Ring.{method}-{tag}", name,
             lambda ctx, m=method, v=value: getattr(ctx.ring(), m)(v))
for tag, value in {"none": None, "str": "abc", "float64": np.zeros((4, 2)),
                   "3ch": np.zeros((4, 3), np.float32), "3d": np.zeros((2, 2, 2), np.float32)
                   }.items():
    case(f"Ring.write-{tag}", "frames", lambda ctx, v=value: ctx.ring().write(v))
for tag, value in {"negative": -1, "str": "1", "float": 1.5, "none": None}.items():
    case(f"Ring.read-n-{tag}", "n", lambda ctx, v=value: ctx.ring().read(v))


def _readonly(shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    a = np.zeros(shape, dtype)
    a.flags.writeable = False
    return a


for tag, value in {"readonly": _readonly((4, 2)), "bytes": b"\0" * 32,
                   "readonly-view": memoryview(b"\0" * 32),
                   "wrong-dtype": np.zeros((4, 2), np.float64),
                   "wrong-shape": np.zeros((4, 3), np.float32), "list": [0.0] * 8,
                   "3d": np.zeros((2, 2, 2), np.float32)}.items():
    case(f"Ring.read-out-{tag}", "out", lambda ctx, v=value: _fill_then_read(ctx, v))


def _fill_then_read(ctx: Ctx, out: Any) -> Any:
    r = ctx.ring()
    r.write(np.ones((4, 2), np.float32))
    return r.read(4, out=out)


for tag, value in {"negative": -1, "str": "3", "float": 3.5, "huge": HUGE, "none": None,
                   "not-a-ring": 0}.items():
    case(f"Ring.attach-fd-{tag}", "fd", lambda ctx, v=value: Ring.attach(v))
case("Ring.attach-fd-a-pipe", "fd", lambda ctx: Ring.attach(ctx.pipe()))

# ---- Watchdog ------------------------------------------------------------------------------
for param in ("budget", "hard_limit_periods", "canary_ms", "cooldown", "interval_ms"):
    for tag, value in {"negative": -1.0, "nan": math.nan, "str": "1", "inf": math.inf,
                       "list": [1]}.items():
        if param == "cooldown" and tag == "inf":
            continue  # an infinite cooldown is a choice: never re-promote
        case(f"Watchdog-{param}-{tag}", param, lambda ctx, p=param, v=value: Watchdog(**{p: v}))
for tag, value in {"zero": 0, "float": 2.5, "str": "8", "none": None, "huge": HUGE}.items():
    case(f"Watchdog-overruns_in_row-{tag}", "overruns_in_row",
         lambda ctx, v=value: Watchdog(overruns_in_row=v))

# ---- sinks ---------------------------------------------------------------------------------
for tag, value in {"none": None, "int": 5, "list": ["a.wav"]}.items():
    case(f"FileSink-path-{tag}", "path", lambda ctx, v=value: FileSink(v))
case("FileSink-format-unknown", "format", lambda ctx: FileSink("/tmp/x.wav", format="mp9"))
case("FileSink-subtype-unknown", "subtype",
     lambda ctx: FileSink("/tmp/x.wav", subtype="PCM_99"))
for tag, value in {"negative": -1, "float": 1.5, "list": [1], "unknown-name": "printer",
                   "closed-fd": 1_000_000}.items():
    case(f"PipeSink-target-{tag}", "target", lambda ctx, v=value: PipeSink(v))
case("PipeSink-format-unknown", "format", lambda ctx: PipeSink(ctx.pipe(), format="mp3"))
case("PipeSink-dtype-float64", "dtype",
     lambda ctx: PipeSink(ctx.pipe(), format="wav", dtype="float64"))
for tag, value in {"negative": -1, "str": "big", "float": 1.5, "huge": HUGE}.items():
    case(f"PipeSink-pipe_size-{tag}", "pipe_size",
         lambda ctx, v=value: PipeSink(ctx.pipe(), pipe_size=v))
for tag, value in {"negative": -5, "str": "x", "float": 2.5}.items():
    case(f"PipeSink-tee-{tag}", "tee", lambda ctx, v=value: PipeSink(ctx.pipe(), tee=v))
for tag, value in {"zero": 0, "negative": -1.0, "nan": math.nan, "str": "1"}.items():
    case(f"DeviceSink-stall_timeout-{tag}", "stall_timeout",
         lambda ctx, v=value: DeviceSink(stall_timeout=v))
for tag, value in {"str": "fast", "negative": -0.1, "nan": math.nan, "list": [1]}.items():
    case(f"DeviceSink-latency-{tag}", "latency", lambda ctx, v=value: DeviceSink(latency=v))
for tag, value in {"negative": -1, "float": 1.5, "str": "64", "huge": HUGE}.items():
    case(f"DeviceSink-frames_per_buffer-{tag}", "frames_per_buffer",
         lambda ctx, v=value: DeviceSink(frames_per_buffer=v))

# ---- realtime, decode ----------------------------------------------------------------------
for tag, value in {"negative": -1, "str": "1", "float": 1.5, "huge": HUGE}.items():
    case(f"acquire_realtime-tid-{tag}", "tid", lambda ctx, v=value: acquire_realtime(tid=v))
for tag, value in {"zero": 0, "too-high": 100, "str": "10", "float": 10.5, "huge": HUGE}.items():
    case(f"acquire_realtime-priority-{tag}", "priority",
         lambda ctx, v=value: acquire_realtime(priority=v))
case("acquire_realtime-policy-unknown", "policy", lambda ctx: acquire_realtime(policy="rr2"))
for tag, value in {"none": None, "int": 5, "list": ["x.wav"]}.items():
    case(f"decode-path-{tag}", "path", lambda ctx, v=value: decode(v))
for tag, value in {"zero": 0, "str": "48000", "float": 44100.5, "huge": HUGE}.items():
    case(f"decode-samplerate-{tag}", "samplerate",
         lambda ctx, v=value: decode(_a_wav(), samplerate=v))


def _a_wav() -> str:
    path = os.path.join(os.path.dirname(__file__), "..", "demos", "sounds", "chime.flac")
    return os.path.normpath(path)


def test_there_are_enough_cases() -> None:
    """The issue asks for at least 250."""
    assert len(CASES) >= 250, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_argument_is_a_clear_error(c: Case) -> None:
    ctx = Ctx()
    try:
        with pytest.raises(ARG_ERRORS) as info:
            c.call(ctx)
    finally:
        ctx.close()
    exc = info.value
    assert type(exc) not in (OverflowError, AttributeError), repr(exc)
    message = str(exc)
    assert c.name in message, f"{type(exc).__name__}: {message!r} does not name {c.name!r}"
    assert "sc_" not in message, f"a C name leaked into {message!r}"
