"""Issue 13's ownership rules, in process: closed objects raise their closed error, rings in use
outlive close(), a sink belongs to one engine at a time and starts again after a stop, caller
memory is written only when writable, and bad arguments name themselves."""

from __future__ import annotations

import gc
import os
import threading
import time

import numpy as np
import pytest
import soundfile as sf

import streamcore
from streamcore import (
    Engine,
    EngineClosedError,
    Ring,
    RingClosedError,
    SinkInUseError,
    Watchdog,
)
from streamcore.sinks import DeviceSink, FileSink, PipeSink, Sink

RATE = 48000
BLOCK = 256


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def noise(frames: int, channels: int = 2, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, (frames, channels)).astype(np.float32)


# ---- every method after close raises the closed error (table-driven) -----------------------

ENGINE_CALLS = {
    "start": lambda e: e.start(),
    "stop": lambda e: e.stop(),
    "play": lambda e: e.play(np.zeros(8, np.float32)),
    "stream": lambda e: e.stream(),
    "stream(ring=...)": lambda e: e.stream(ring=Ring(64, 1, lock=False)),
    "voices": lambda e: e.voices,
    "frame": lambda e: e.frame,
    "stats": lambda e: e.stats(),
    "stats(consistent=True)": lambda e: e.stats(consistent=True),
    "trace": lambda e: e.trace(),
    "events": lambda e: e.events(),
    "event_fd": lambda e: e.event_fd,
    "subscribe": lambda e: e.subscribe(print),
    "repromote": lambda e: e.repromote(),
}


def failures(calls: dict, target, error: type[BaseException]) -> list[str]:
    """The names of the calls that did not raise ``error`` (and what they did instead)."""
    wrong = []
    for name, call in sorted(calls.items()):
        try:
            call(target)
        except error:
            continue
        except BaseException as e:  # reported, not raised: the table shows every row
            wrong.append(f"{name}: {type(e).__name__}: {e}")
        else:
            wrong.append(f"{name}: returned")
    return wrong


class TestClosedEngine:
    """After close() every method but close() raises EngineClosedError; state stays readable."""

    def test_every_method_raises(self):
        engine = Engine(sink="null")
        engine.start()
        engine.close()
        assert failures(ENGINE_CALLS, engine, EngineClosedError) == []
        external = Engine(sink="external")
        external.close()
        manual = Engine(sink="manual")
        manual.close()
        assert failures({"period_consumed": lambda e: e.period_consumed()}, external,
                        EngineClosedError) == []
        assert failures({"render": lambda e: e.render(1)}, manual, EngineClosedError) == []
        # what stays: idempotent close, the state, and nothing made for a refused call
        engine.close()
        assert engine.closed and not engine.running and "closed" in repr(engine)
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(EngineClosedError):
            engine.stream(channels=2)
        assert len(os.listdir("/proc/self/fd")) == before


VOICE_CALLS = {
    "stop": lambda v: v.stop(),
    "gain=": lambda v: setattr(v, "gain", 0.5),
    "pan=": lambda v: setattr(v, "pan", 0.5),
    "stats": lambda v: v.stats(),
}
STREAM_RING_CALLS = {
    "write": lambda v: v.write(np.zeros((4, 2), np.float32)),
    "write_view": lambda v: v.write_view(4),
    "commit": lambda v: v.commit(0),
    "writable": lambda v: v.writable,
}


class TestClosedVoices:
    """A voice of a closed engine: the engine's methods raise EngineClosedError, the writing
    methods of a stream voice's own ring RingClosedError; done, wait and the counts stay."""

    def test_every_method_raises_and_the_final_state_stays(self):
        engine = Engine(sink="null", channels=2)
        engine.start()
        voice = engine.play(np.zeros((4800, 2), np.float32), loop=True)
        stream = engine.stream(channels=2)
        stream.write(np.zeros((64, 2), np.float32))
        time.sleep(0.02)
        engine.close()
        assert failures(VOICE_CALLS, voice, EngineClosedError) == []
        assert failures(VOICE_CALLS, stream, EngineClosedError) == []
        assert failures(STREAM_RING_CALLS, stream, RingClosedError) == []
        for v in (voice, stream):
            assert v.done and v.wait(0) and v.end_reason == "flushed"
            assert v.frames_played > 0 and v.gain == 1.0


RING_CALLS = {
    "write_view": lambda r: r.write_view(1),
    "commit": lambda r: r.commit(0),
    "write": lambda r: r.write(np.zeros((1, 2), np.float32)),
    "read_view": lambda r: r.read_view(1),
    "release": lambda r: r.release(0),
    "read": lambda r: r.read(1),
    "read(out=...)": lambda r: r.read(1, out=np.zeros((1, 2), np.float32)),
    "readable": lambda r: r.readable,
    "writable": lambda r: r.writable,
    "capacity": lambda r: r.capacity,
    "channels": lambda r: r.channels,
    "dtype": lambda r: r.dtype,
    "frame_bytes": lambda r: r.frame_bytes,
    "fd": lambda r: r.fd,
    "buffer": lambda r: r.buffer,
    "locked": lambda r: r.locked,
    "locked_bytes": lambda r: r.locked_bytes,
    "broken": lambda r: r.broken,
    "stats": lambda r: r.stats,
    "lock": lambda r: r.lock(),
    "native_handle": lambda r: r.native_handle(),
}


class TestClosedRing:
    """After Ring.close() every method but close() raises RingClosedError (a ValueError)."""

    def test_every_method_raises(self):
        ring = Ring(64, 2, "float32", lock=False)
        ring.close()
        assert failures(RING_CALLS, ring, RingClosedError) == []
        with pytest.raises(ValueError, match="closed"):  # a ValueError, as before
            ring.read(1)
        ring.close()
        assert ring.closed and repr(ring) == "<Ring closed>"


class TestClosedSinks:
    """A sink whose engine closed: start() raises EngineClosedError (until another engine
    opens it), stop() and close() do nothing, the figures stay readable; its context
    raises EngineClosedError too."""

    def test_file_sink(self, tmp_path):
        sink = FileSink(tmp_path / "out.wav")
        engine = Engine(samplerate=RATE, blocksize=BLOCK, sink=sink)
        engine.play(np.zeros((4 * BLOCK, 2), np.float32))  # a reader sink writes only audio
        engine.start()
        context = sink.context
        engine.close()
        self._check(sink, context)
        assert sink.stats()["frames"] > 0

    def test_pipe_sink(self, tmp_path):
        with open(tmp_path / "out.raw", "wb") as target:
            sink = PipeSink(target, format="s16le")
            engine = Engine(samplerate=RATE, blocksize=BLOCK, sink=sink, realtime=False)
            engine.play(np.zeros((4 * BLOCK, 2), np.float32), loop=True)
            engine.start()
            context = sink.context
            time.sleep(0.05)
            engine.close()
            self._check(sink, context)
            assert sink.stats()["bytes"] > 0

    @staticmethod
    def _check(sink: Sink, context) -> None:
        with pytest.raises(EngineClosedError):
            sink.start()
        sink.stop()
        sink.close()
        assert sink.stats()["error"] is None
        assert context.closed
        for call in (lambda: context.output, lambda: context.engine_handle,
                     lambda: context.period_consumed(), lambda: context.move_mixer(5)):
            with pytest.raises(EngineClosedError):
                call()
        context.fail("late")  # after close: nothing to stop, returns at once
        assert not context.running


class TestCloseFromAnotherThread:
    """Threads use voices, rings and figures while the main thread closes the engine: each
    call either works or raises its closed error."""

    def test_voices_and_rings_against_close(self):
        for _round in range(10):
            engine = Engine(sink="null", blocksize=64)
            engine.start()
            stream = engine.stream(channels=2, frames=4096)
            voice = engine.play(np.zeros((640, 2), np.float32), loop=True)
            errors: list[BaseException] = []
            go = threading.Event()

            def use(engine=engine, stream=stream, voice=voice, errors=errors, go=go) -> None:
                go.wait()
                block = np.zeros((32, 2), np.float32)
                for _ in range(300):
                    for call in (lambda: stream.write(block), lambda: voice.stats(),
                                 lambda: setattr(voice, "gain", 0.5), lambda: engine.frame,
                                 lambda: engine.stats(), lambda: stream.stats()):
                        try:
                            call()
                        except (EngineClosedError, RingClosedError):
                            pass
                        except BaseException as e:
                            errors.append(e)

            threads = [threading.Thread(target=use) for _ in range(2)]
            for t in threads:
                t.start()
            go.set()
            time.sleep(0.002)
            engine.close()
            for t in threads:
                t.join()
            assert errors == []
            assert voice.done and stream.done


class TestSubscriberCloses:
    """A subscriber callback may close the engine: no deadlock, no error in the thread."""

    def test_close_from_the_callback(self):
        errors: list[BaseException] = []
        hook, threading.excepthook = threading.excepthook, lambda a: errors.append(a.exc_value)
        try:
            engine = Engine(watchdog=Watchdog(hard_limit_periods=4, cooldown=60))
            engine.start()
            assert engine.grant is not None and engine.grant.realtime, engine.grant
            seen = []
            engine.subscribe(lambda event: (seen.append(event), engine.close()))
            engine._test_spin(0.2)  # past the hard limit: a demotion event
            deadline = time.monotonic() + 10
            while not engine.closed and time.monotonic() < deadline:
                time.sleep(0.01)
            assert engine.closed and [e.reason for e in seen] == ["hard_limit"]
            engine.close()  # returns once the callback's close has finished
            time.sleep(0.1)  # the delivery thread ends after its callback
        finally:
            threading.excepthook = hook
        assert errors == []
        assert not any(t.name == "streamcore-events" for t in threading.enumerate())


# ---- rings in use: deferred close -----------------------------------------------------------


class TestDeferredClose:
    """A ring closed while a voice plays it: the object is closed at once, the memory stays
    until the mixer hands the voice back."""

    def test_users_ring_closed_while_it_plays(self):
        data = noise(3 * BLOCK)
        with Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
            ring = Ring(1024, 2, "float32", lock=False)
            ring.write(data)
            fd = ring.fd
            voice = engine.stream(ring=ring)
            ring.close()
            gc.collect()
            assert ring.closed and fd_is_open(fd)  # the engine still holds it
            with pytest.raises(RingClosedError):
                ring.write(data)
            out = engine.render(3)
            assert np.array_equal(out, data)  # the mixer read the closed ring's frames
            voice.stop(fade=0)
            engine.render(1)
            assert voice.done
            gc.collect()
            assert not fd_is_open(fd)  # handed back: the last reference went
            with pytest.raises(RingClosedError):  # and a closed ring is refused up front
                engine.stream(ring=ring)

    def test_the_engines_ring_is_released_at_hand_back(self):
        """Not at engine close: the fd, the mappings and the locked pages go with the voice
        (a ring passed in is only unpinned: it stays the caller's)."""
        with Engine(samplerate=RATE, blocksize=BLOCK, sink="manual") as engine:
            voice = engine.stream(channels=2)
            fd = voice.ring.fd
            voice.write(noise(BLOCK))
            mine = Ring(1024, 2, "float32", lock=False)
            other = engine.stream(ring=mine)
            engine.render(1)
            voice.stop(fade=0)
            other.stop(fade=0)
            engine.render(1)
            assert voice.done and voice.ring.closed
            gc.collect()
            assert not fd_is_open(fd)
            with pytest.raises(RingClosedError):
                voice.write(noise(8))
            assert other.done and not mine.closed and mine.write(noise(8)) == 8
            mine.close()

    def test_closing_the_output_ring_while_running(self):
        """The engine holds its output ring's memory: closing the Ring object does not
        pull it from under the mixer."""
        with Engine(sink="null", blocksize=64) as engine:
            engine.output.close()
            gc.collect()
            cycles = engine.stats().cycles
            time.sleep(0.05)
            assert engine.stats().cycles > cycles


# ---- caller memory: written only when writable ------------------------------------------------


class TestReadOnlyOut:
    """Ring.read(out=...) refuses read-only memory before touching it or the ring."""

    @pytest.mark.parametrize("kind", ["readonly-array", "array-over-bytes", "bytes",
                                      "memoryview-of-bytes"])
    def test_refused_and_unchanged(self, kind):
        ring = Ring(16, 2, "float32", lock=False)
        ring.write(np.ones((16, 2), np.float32))
        blob = bytes(16 * 2 * 4)
        frozen = np.zeros((16, 2), np.float32)
        frozen.flags.writeable = False
        out = {"readonly-array": frozen,
               "array-over-bytes": np.frombuffer(blob, np.float32).reshape(16, 2),
               "bytes": blob, "memoryview-of-bytes": memoryview(blob)}[kind]
        with pytest.raises(ValueError, match="out must be writable"):
            ring.read(16, out=out)
        assert blob == bytes(16 * 2 * 4) and not frozen.any()
        assert ring.readable == 16
        ring.close()

    def test_read_only_mapping(self, tmp_path):
        """A read-only np.memmap is refused; a writable array of the same shape is not."""
        path = tmp_path / "frames.raw"
        path.write_bytes(bytes(16 * 2 * 4))
        mapped = np.memmap(path, dtype=np.float32, mode="r", shape=(16, 2))
        with Ring(16, 2, "float32", lock=False) as ring:
            ring.write(np.ones((16, 2), np.float32))
            with pytest.raises(ValueError, match="out must be writable"):
                ring.read(16, out=mapped)
            assert ring.readable == 16
            out = np.zeros((16, 2), np.float32)
            assert ring.read(16, out=out).shape == (16, 2) and out.all()
        assert path.read_bytes() == bytes(16 * 2 * 4)


# ---- a sink belongs to one engine at a time, and starts again after a stop ---------------------


class TestSinkLifecycle:
    """Each sink: a second engine gets SinkInUseError (a ValueError naming the sink) while the
    first is open; stop() then start() works on one engine; after the engine closed, start()
    raises EngineClosedError and a new engine may use the sink (the device sink: in the JACK
    class below)."""

    def test_file_sink(self, tmp_path):
        path = tmp_path / "restart.wav"
        sink = FileSink(path)
        first, second = noise(BLOCK * 20, seed=1), noise(BLOCK * 20, seed=2)
        engine = Engine(samplerate=RATE, blocksize=BLOCK, sink=sink)
        try:
            with pytest.raises(SinkInUseError, match="sink") as info:
                Engine(samplerate=RATE, blocksize=BLOCK, sink=sink)
            assert isinstance(info.value, ValueError)
            # A stop hands the voices back (flushed); what plays after the restart lands in
            # the same file right after what was rendered before: nothing lost or doubled.
            voice = engine.play(first, at=0)
            engine.start()
            assert voice.wait(30) and voice.end_reason == "finished"
            engine.stop()
            assert sink.error is None
            at = engine.frame
            voice = engine.play(second, at=at)
            engine.start()
            assert voice.wait(30) and voice.end_reason == "finished"
            engine.stop()
            frames = engine.stats().frames
        finally:
            engine.close()
        data, rate = sf.read(path, dtype="float32")
        assert rate == RATE and data.shape[0] == frames
        assert np.array_equal(data[:len(first)], first)
        assert np.array_equal(data[at:at + len(second)], second)
        with pytest.raises(EngineClosedError):
            sink.start()
        # A new engine: the file starts again.
        engine = Engine(samplerate=RATE, blocksize=BLOCK, sink=sink)
        try:
            voice = engine.play(second, at=0)
            engine.start()
            assert voice.wait(30)
            engine.stop()
            frames = engine.stats().frames
        finally:
            engine.close()
        data, _ = sf.read(path, dtype="float32")
        assert data.shape[0] == frames and np.array_equal(data[:len(second)], second)

    def test_pipe_sink(self, tmp_path):
        out = tmp_path / "twice.raw"
        with open(out, "wb") as target:
            sink = PipeSink(target, format="s16le")
            sent = 0
            for _ in range(2):
                engine = Engine(samplerate=RATE, blocksize=BLOCK, sink=sink, realtime=False)
                try:
                    with pytest.raises(SinkInUseError, match="sink"):
                        Engine(samplerate=RATE, blocksize=BLOCK, sink=sink, realtime=False)
                    engine.start()
                    engine.stop()
                    engine.play(np.zeros((4 * BLOCK, 2), np.float32), loop=True)
                    engine.start()
                    deadline = time.monotonic() + 10
                    while sink.stats()["bytes"] < 1 << 16 and time.monotonic() < deadline:
                        time.sleep(0.01)
                finally:
                    engine.close()
                with pytest.raises(EngineClosedError):
                    sink.start()
                stats = sink.stats()
                assert stats["error"] is None and stats["bytes"] >= 1 << 16
                sent += stats["bytes"]
        assert out.stat().st_size == sent

    def test_a_failed_or_collected_engine_lets_go(self, tmp_path):
        sink = FileSink(tmp_path / "a.wav")
        holder = Engine(samplerate=RATE, sink=sink)
        with pytest.raises(SinkInUseError):
            Engine(samplerate=RATE, sink=sink)
        with pytest.warns(ResourceWarning, match="unclosed"):
            del holder
            gc.collect()
        with pytest.raises(ValueError, match="dither"):
            Engine(samplerate=RATE, sink=sink, dither=True)
        Engine(samplerate=RATE, sink=sink).close()


@pytest.fixture
def jack_device(jack_server):
    if not streamcore.sinks.device.portaudio_usable():
        pytest.fail("PortAudio was poisoned by a dead server in this process")
    return jack_server


class TestDeviceSinkLifecycle:
    """The device sink on the JACK dummy server: a stop then start on one engine, then a new
    engine: no false "server went away", and no stream left open."""

    def test_restart_and_reuse(self, jack_device):
        sink = DeviceSink("system", stall_timeout=2.0)
        engine = Engine(samplerate=RATE, blocksize=BLOCK, sink=sink)
        try:
            engine.start()
            time.sleep(0.3)
            engine.stop()
            assert sink._stream is None  # closed at stop, not left to PortAudio's exit
            consumed = engine.stats().consumed
            engine.start()
            time.sleep(0.4)  # several of the monitor's looks
            assert engine.running and sink.error is None
            assert engine.stats().consumed > consumed
            assert engine.stats().sink["callbacks"] > 0
        finally:
            engine.close()
        assert sink._stream is None
        with pytest.raises(EngineClosedError):
            sink.start()
        second = Engine(samplerate=RATE, blocksize=BLOCK, sink=sink)
        try:
            second.start()
            time.sleep(0.3)
            assert second.running and sink.error is None
            assert second.stats().sink["callbacks"] > 0
        finally:
            second.close()

    def test_second_engine_refused_while_the_first_plays(self, jack_device):
        sink = DeviceSink("system")
        with Engine(samplerate=RATE, blocksize=BLOCK, sink=sink), pytest.raises(SinkInUseError):
            Engine(samplerate=RATE, blocksize=BLOCK, sink=sink)


# ---- bad arguments name themselves --------------------------------------------------------------


def _engine_calls():
    arr = np.zeros(8, np.float32)
    return [
        ("Engine(samplerate=2**70)", lambda e: Engine(samplerate=2**70), ValueError,
         "samplerate"),
        ("Engine(sink=None)", lambda e: Engine(sink=None), ValueError, "sink"),
        ("Engine(dtype=object())", lambda e: Engine(dtype=object()), TypeError, "dtype"),
        ("Engine(watchdog=huge)", lambda e: Engine(watchdog=Watchdog(budget=1e300)),
         ValueError, "watchdog"),
        ("play(None)", lambda e: e.play(None), TypeError, "array"),
        ("play(at=2**70)", lambda e: e.play(arr, at=2**70), ValueError, "at"),
        ("play(fade_in=10**400)", lambda e: e.play(arr, fade_in=10**400), ValueError,
         "fade_in"),
        ("play(gain=None)", lambda e: e.play(arr, gain=None), TypeError, "gain"),
        ("stream(frames=2**70)", lambda e: e.stream(frames=2**70), ValueError, "frames"),
        ("stream(ring='x')", lambda e: e.stream(ring="x"), TypeError, "ring"),
        ("stats(timeout=None)", lambda e: e.stats(timeout=None), TypeError, "timeout"),
        ("trace(None)", lambda e: e.trace(None), TypeError, "max_records"),
        ("subscribe(None)", lambda e: e.subscribe(None), TypeError, "callback"),
        ("render(2**70)", lambda e: e.render(2**70), ValueError, "periods"),
        ("voice.stop(fade=None)", lambda e: e.play(arr).stop(fade=None), TypeError, "fade"),
        ("voice.gain=2**70", lambda e: setattr(e.play(arr), "gain", 2**70), ValueError,
         "gain"),
        ("voice.wait('x')", lambda e: e.play(arr).wait("x"), TypeError, "timeout"),
        ("Ring(2**70)", lambda e: Ring(2**70, lock=False), ValueError, "ring"),
        ("Ring(channels=2**40)", lambda e: Ring(8, channels=2**40, lock=False), ValueError,
         "ring"),
        ("Ring.attach(2**40)", lambda e: Ring.attach(2**40), ValueError, "fd"),
        ("FileSink(None)", lambda e: FileSink(None), TypeError, "path"),
        ("FileSink(format=1)", lambda e: FileSink("x.wav", format=1), TypeError, "format"),
        ("PipeSink(format=None)", lambda e: PipeSink(format=None), ValueError, "format"),
        ("PipeSink(dtype=object())", lambda e: PipeSink(dtype=object()), ValueError, "dtype"),
        ("PipeSink(pipe_size=True)", lambda e: PipeSink(pipe_size=True), ValueError,
         "pipe_size"),
        ("PipeSink(pipe_size=2**70)", lambda e: PipeSink(pipe_size=2**70), ValueError,
         "pipe_size"),
        ("DeviceSink(stall_timeout=nan)", lambda e: DeviceSink(stall_timeout=float("nan")),
         ValueError, "stall_timeout"),
        ("DeviceSink(frames_per_buffer=2**70)",
         lambda e: DeviceSink(frames_per_buffer=2**70), ValueError, "frames_per_buffer"),
    ]


BAD = _engine_calls()


class TestBadArguments:
    """A bad argument is a ValueError or TypeError naming it: never a cffi OverflowError or
    an AttributeError from deep inside."""

    def test_each_names_itself(self):
        wrong = []
        for name, call, error, word in BAD:
            with Engine(sink="manual", channels=2) as engine:
                try:
                    call(engine)
                except error as e:
                    if word not in str(e):
                        wrong.append(f"{name}: {type(e).__name__} without {word!r}: {e}")
                except BaseException as e:
                    wrong.append(f"{name}: {type(e).__name__}: {e}")
                else:
                    wrong.append(f"{name}: no error")
        assert wrong == []

    def test_huge_counts_are_clamped_where_they_mean_all(self):
        with Ring(16, 2, "float32", lock=False) as ring:
            n = ring.capacity  # rounded up to a page
            assert ring.write_view(2**70).shape == (n, 2)
            ring.commit(n)
            assert ring.read_view(2**70).shape == (n, 2)
            assert ring.read(2**70).shape == (n, 2)
            with pytest.raises(ValueError, match="release"):
                ring.release(2**70)
            with pytest.raises(ValueError, match="commit"):
                ring.commit(2**70)
        with Engine(sink="manual") as engine:
            assert len(engine.trace(2**70)) <= 8192
