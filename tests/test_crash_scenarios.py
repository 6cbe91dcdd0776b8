"""Issue 13: ordinary user programs that used to kill the whole process with a signal.

Each scenario is a small script run in a child interpreter (a crash there is a SIGSEGV or
SIGABRT, which must not take pytest with it); the child must end with its normal exit
status (0, or the status the script itself asks for), never by a signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child interpreter with every ResourceWarning shown."""
    return subprocess.run([sys.executable, "-W", "always::ResourceWarning", "-c",
                           textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=dict(os.environ))


def assert_exit(proc: subprocess.CompletedProcess[str], status: int = 0) -> None:
    """The child exited by itself with ``status`` (a negative returncode is a signal)."""
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        pytest.fail(f"the child died of {name}; its stderr:\n{proc.stderr[-4000:]}")
    assert proc.returncode == status, proc.stderr[-4000:]


class TestScriptEnds:
    """A script that ends or raises while an engine plays exits normally, with a warning."""

    def test_script_ends_with_a_running_engine(self):
        """No close(): the exit hook stops and frees the engine; a ResourceWarning says so."""
        proc = run_script("""
            import numpy as np, streamcore
            engine = streamcore.Engine(sink="null")
            engine.start()
            engine.play(np.zeros(4800, np.float32), loop=True)
            voice = engine.stream(channels=2)
            voice.write(np.zeros((256, 2), np.float32))
            print("playing")
        """)
        assert_exit(proc, 0)
        assert proc.stdout.strip() == "playing"
        assert "ResourceWarning" in proc.stderr and "unclosed" in proc.stderr

    def test_script_raises_with_a_running_engine(self):
        """An uncaught exception: the traceback, status 1, no signal."""
        proc = run_script("""
            import numpy as np, streamcore
            engine = streamcore.Engine(sink="null")
            engine.start()
            engine.play(np.zeros(4800, np.float32), loop=True)
            raise RuntimeError("the user's bug")
        """)
        assert_exit(proc, 1)
        assert "RuntimeError: the user's bug" in proc.stderr
        assert "ResourceWarning" in proc.stderr

    def test_script_exits_with_its_own_status(self):
        """sys.exit(3) with two engines running (one external, one null): status 3."""
        proc = run_script("""
            import sys
            import numpy as np
            import streamcore
            a = streamcore.Engine(sink="null")
            a.start()
            a.play(np.zeros(4800, np.float32), loop=True)
            b = streamcore.Engine(sink="external")
            b.start()
            voice = b.stream(channels=2)
            voice.write(np.zeros((256, 2), np.float32))
            sys.exit(3)
        """)
        assert_exit(proc, 3)

    def test_engine_in_a_reference_cycle_at_exit(self):
        """An engine kept alive only by a cycle reaches interpreter teardown: no crash."""
        proc = run_script("""
            import streamcore
            class Holder:
                pass
            h = Holder()
            h.self = h
            h.engine = streamcore.Engine(sink="null")
            h.engine.start()
            streamcore._cycle_holder = h  # lives in a module global until teardown
            del h
        """)
        assert_exit(proc, 0)


class TestCloseRaces:
    """close() in one thread while others read figures: a closed error, never a crash."""

    def test_readers_against_close(self):
        """Threads call stats/frame/trace/events/voices in a loop while the main thread
        closes engine after engine for about a second."""
        proc = run_script("""
            import threading, time
            import numpy as np
            import streamcore
            from streamcore.errors import EngineClosedError

            unexpected = []
            def hammer(get_engine, stop):
                while not stop.is_set():
                    engine = get_engine()
                    for call in (lambda: engine.stats(), lambda: engine.frame,
                                 lambda: engine.trace(16), lambda: engine.events(),
                                 lambda: engine.voices, lambda: engine.event_fd,
                                 lambda: engine.stats(consistent=True, timeout=0.2)):
                        try:
                            call()
                        except EngineClosedError:
                            pass
                        except Exception as e:  # anything else is a bug
                            unexpected.append(repr(e))

            current = [streamcore.Engine(sink="null", blocksize=64)]
            stop = threading.Event()
            threads = [threading.Thread(target=hammer, args=(lambda: current[0], stop))
                       for _ in range(3)]
            for t in threads:
                t.start()
            end = time.monotonic() + 1.0
            rounds = 0
            while time.monotonic() < end:
                engine = current[0]
                engine.start()
                engine.play(np.zeros(64, np.float32), loop=True)
                time.sleep(0.005)
                engine.close()
                current[0] = streamcore.Engine(sink="null", blocksize=64)
                rounds += 1
            stop.set()
            for t in threads:
                t.join()
            current[0].close()
            assert not unexpected, unexpected[:5]
            print(rounds)
        """)
        assert_exit(proc, 0)
        assert int(proc.stdout.split()[-1]) > 5


class TestRingsInUse:
    """A ring closed while a voice plays it: the Python object is closed at once, the memory
    goes when the mixer hands the voice back."""

    def test_closing_a_stream_voices_ring_while_it_plays(self):
        proc = run_script("""
            import gc, time
            import numpy as np
            import streamcore
            from streamcore.errors import RingClosedError

            with streamcore.Engine(sink="null", blocksize=64) as engine:
                voice = engine.stream(channels=2, frames=4096)
                voice.write(np.full((4096, 2), 0.1, np.float32))
                voice.ring.close()
                gc.collect()
                time.sleep(0.2)          # the mixer goes on reading the ring
                try:
                    voice.write(np.zeros((8, 2), np.float32))
                    raise SystemExit("writing into a closed ring did not raise")
                except RingClosedError:
                    pass
                engine.stats()
                assert voice.stats()["frames_played"] > 0
                voice.stop(fade=0)
                assert voice.wait(5)
                again = engine.play(np.zeros(640, np.float32))
                assert again.wait(5)
        """)
        assert_exit(proc, 0)

    def test_closing_a_users_ring_while_it_plays(self):
        proc = run_script("""
            import gc, time
            import numpy as np
            import streamcore

            with streamcore.Engine(sink="null", blocksize=64) as engine:
                ring = streamcore.Ring(8192, 2, "float32", lock=False)
                ring.write(np.full((8192, 2), 0.1, np.float32))
                voice = engine.stream(ring=ring)
                ring.close()  # this process wrote it: the writer's goodbye ends the stream
                del ring
                gc.collect()
                assert voice.wait(5)  # once what was written has played, from memory the
                print(voice.end_reason, voice.frames_played, engine.frame > 0)  # engine kept
                other = engine.stream(channels=1)
                other.write(np.zeros((64, 1), np.float32))
                other.stop(fade=0)
                assert other.wait(5)
                assert engine.voices == []
        """)
        assert_exit(proc, 0)
        assert proc.stdout.split() == ["finished", "8192", "True"]


class TestReadOnlyOut:
    """Ring.read(out=...) never writes into memory the caller cannot write."""

    def test_read_only_targets_are_refused_and_left_alone(self):
        proc = run_script("""
            import mmap, tempfile
            import numpy as np
            import streamcore

            ring = streamcore.Ring(64, 2, "float32", lock=False)
            ring.write(np.ones((64, 2), np.float32))
            blob = bytes(64 * 2 * 4)
            frozen = np.zeros((64, 2), np.float32)
            frozen.flags.writeable = False
            with tempfile.TemporaryFile() as f:
                f.write(blob)
                f.flush()
                mapped = np.memmap(f, dtype=np.float32, mode="r", shape=(64, 2))
                targets = {"readonly array": frozen,
                           "array over bytes": np.frombuffer(blob, np.float32).reshape(64, 2),
                           "bytes": blob, "memoryview of bytes": memoryview(blob),
                           "read-only mapping": mapped}
                for name, out in targets.items():
                    try:
                        ring.read(64, out=out)
                    except ValueError as e:
                        assert "out must be writable" in str(e), (name, str(e))
                    else:
                        raise SystemExit(f"{name}: read into it")
                assert not np.asarray(mapped).any()
            assert blob == bytes(64 * 2 * 4) and not frozen.any()
            assert ring.readable == 64   # nothing was consumed either
            ring.close()
        """)
        assert_exit(proc, 0)


class TestDeviceSinkReuse:
    """A DeviceSink stopped and started again, then used by a second engine (JACK dummy)."""

    def test_restart_and_second_engine(self, jack_server):
        proc = run_script("""
            import time
            import numpy as np
            import streamcore
            from streamcore.sinks.device import DeviceSink

            def callbacks(engine):
                return engine.stats().sink["callbacks"]

            sink = DeviceSink("system", stall_timeout=2.0)
            engine = streamcore.Engine(samplerate=48000, blocksize=256, sink=sink)
            engine.start()
            engine.play(np.zeros((4800, 2), np.float32), loop=True)
            time.sleep(0.4)
            engine.stop()
            first = callbacks(engine)
            engine.start()
            time.sleep(0.6)          # longer than the monitor's first checks
            assert engine.running, sink.error
            assert sink.error is None, sink.error
            assert callbacks(engine) > first, (first, callbacks(engine))
            engine.close()
            second = streamcore.Engine(samplerate=48000, blocksize=256, sink=sink)
            second.start()
            time.sleep(0.6)
            assert second.running and sink.error is None, sink.error
            assert second.stats().sink["callbacks"] > 0
            second.close()
            print("ok")
        """, timeout=90)
        assert_exit(proc, 0)
        assert proc.stdout.strip() == "ok"

    def test_script_ends_with_a_device_engine_playing(self, jack_server):
        """PortAudio's own exit handler (sounddevice's) may run before the engines are
        closed: the sink then leaves the terminated PortAudio alone."""
        proc = run_script("""
            import numpy as np
            import streamcore
            from streamcore.sinks.device import DeviceSink

            engine = streamcore.Engine(samplerate=48000, blocksize=256,
                                       sink=DeviceSink("system"))
            engine.start()
            engine.play(np.zeros((4800, 2), np.float32), loop=True)
            print("playing")
        """, timeout=90)
        assert_exit(proc, 0)
        assert proc.stdout.strip() == "playing"
        assert "ResourceWarning" in proc.stderr
