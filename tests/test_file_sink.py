"""The file sink: offline and paced renders to WAV/FLAC/OGG read back with soundfile, clean
stops that lose nothing, and disk errors that are reported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import soundfile as sf

import streamcore
from streamcore.errors import SinkError
from streamcore.sinks.base import Sink
from streamcore.sinks.file import FileSink, choose_format

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 48000
BLOCK = 256


def _sequence(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.9, 0.9, (int(seconds * RATE), 2)).astype(np.float32)


def _golden(sequence: np.ndarray, dtype: str, frames: int) -> np.ndarray:
    """What the engine mixes for ``sequence`` played at frame 0, rendered on the manual
    clock in this thread."""
    with streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink="manual",
                           dtype=dtype) as manual:
        manual.play(sequence, at=0)
        return manual.render(frames // BLOCK)


def _render(path, sequence: np.ndarray, dtype: str, **sink_args):
    """Play ``sequence`` from frame 0 into a FileSink until the voice is done; returns the
    engine's final stats."""
    engine = streamcore.Engine(samplerate=RATE, blocksize=BLOCK, dtype=dtype,
                               sink=FileSink(path, **sink_args))
    try:
        voice = engine.play(sequence, at=0)  # queued before start: it starts at frame 0
        engine.start()
        assert voice.wait(120), "the render did not finish"
        engine.stop()
        return engine.stats()
    finally:
        engine.close()


class TestChooseFormat:
    """Format from the extension, subtype from the engine's dtype (pure)."""

    def test_extensions(self):
        assert choose_format("a.wav", None, None, "float32") == ("WAV", "FLOAT")
        assert choose_format("a.FLAC", None, None, "int16") == ("FLAC", "PCM_16")
        assert choose_format("a.ogg", None, None, "float32") == ("OGG", "VORBIS")

    def test_explicit_format_and_subtype_win(self):
        assert choose_format("a.bin", "wav", "pcm_24", "float32") == ("WAV", "PCM_24")

    def test_unknown_extension_asks_for_a_format(self):
        with pytest.raises(ValueError, match="format="):
            choose_format("a.mp9", None, None, "float32")


class TestRender:
    """Offline renders read back exactly as mixed."""

    @pytest.mark.parametrize(("name", "dtype", "fmt", "subtype"), [
        ("render.wav", "float32", "WAV", "FLOAT"),
        ("render.flac", "int16", "FLAC", "PCM_16"),
    ])
    def test_ten_seconds_read_back_exactly(self, tmp_path, name, dtype, fmt, subtype):
        sequence = _sequence(10.0)
        path = tmp_path / name
        stats = _render(path, sequence, dtype)
        info = sf.info(str(path))
        assert (info.format, info.subtype, info.samplerate, info.channels) == \
            (fmt, subtype, RATE, 2)
        data, _ = sf.read(str(path), dtype=dtype)
        assert data.shape[0] == stats.frames == stats.sink["frames"] >= sequence.shape[0]
        assert np.array_equal(data, _golden(sequence, dtype, stats.frames))
        assert stats.sink["error"] is None and stats.xruns == 0

    def test_ogg_is_a_valid_stream_of_every_frame(self, tmp_path):
        path = tmp_path / "render.ogg"
        stats = _render(path, _sequence(1.0), "float32")
        info = sf.info(str(path))
        assert (info.format, info.subtype) == ("OGG", "VORBIS")
        assert info.frames == len(_sequence(1.0)) <= stats.frames  # the audio, not the
        # rest of its last period

    def test_stop_mid_render_loses_nothing(self, tmp_path):
        """A stop while the voice still plays: the file holds every frame the engine
        rendered (the ring is drained after the mixer stopped), and they are the mix."""
        sequence = _sequence(60.0, seed=3)
        path = tmp_path / "cut.wav"
        engine = streamcore.Engine(samplerate=RATE, blocksize=BLOCK, sink=FileSink(path))
        try:
            engine.play(sequence, at=0)
            engine.start()
            while engine.stats().frames < RATE:
                time.sleep(0.001)
            engine.stop()
            stats = engine.stats()
        finally:
            engine.close()
        data, _ = sf.read(str(path), dtype="float32")
        assert 0 < data.shape[0] == stats.frames < sequence.shape[0]
        assert np.array_equal(data, sequence[:stats.frames])

    def test_realtime_paces_at_the_sample_rate(self, tmp_path):
        """realtime=True: one second of audio takes at least (about) one second to write."""
        sequence = _sequence(1.0)
        t0 = time.monotonic()
        stats = _render(tmp_path / "paced.wav", sequence, "float32", realtime=True)
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.9 * sequence.shape[0] / RATE
        assert stats.sink["realtime"] is True and stats.sink["frames"] == stats.frames


class TestErrors:
    """Bad paths and disk errors are reported, never swallowed."""

    def test_missing_directory(self, tmp_path):
        engine = streamcore.Engine(sink=FileSink(tmp_path / "nowhere" / "x.wav"))
        with pytest.raises(SinkError, match="does not exist"):
            engine.start()
        assert not engine.running
        engine.close()

    def test_format_the_container_cannot_hold(self, tmp_path):
        engine = streamcore.Engine(sink=FileSink(tmp_path / "x.flac", subtype="FLOAT"))
        with pytest.raises(ValueError, match="FLAC"):
            engine.start()
        engine.close()

    def test_removed_directory_is_reported(self, tmp_path):
        """The directory vanishes mid-render (writes to the orphaned file still succeed):
        the sink notices, the engine stops, close() raises."""
        directory = tmp_path / "gone"
        directory.mkdir()
        engine = streamcore.Engine(samplerate=RATE, blocksize=BLOCK,
                                   sink=FileSink(directory / "x.wav", realtime=True))
        engine.play(_sequence(10.0), at=0)
        engine.start()
        time.sleep(0.2)
        shutil.rmtree(directory)
        deadline = time.monotonic() + 5
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not engine.running
        assert "was removed" in engine.stats().sink["error"]
        with pytest.raises(SinkError, match="was removed"):
            engine.close()

    def test_file_too_large_stops_the_engine_and_raises_at_close(self, tmp_path):
        """RLIMIT_FSIZE of 1 MiB (SIGXFSZ ignored, so write() fails with EFBIG): the writer
        reports the failure, the engine stops by itself, close() raises SinkError."""
        code = textwrap.dedent(f"""
            import json, resource, signal, sys, time
            sys.path.insert(0, {ROOT!r})
            import numpy as np
            import streamcore
            from streamcore.errors import SinkError
            from streamcore.sinks.file import FileSink
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
            engine = streamcore.Engine(samplerate=48000, blocksize=256,
                                       sink=FileSink({str(tmp_path / "big.wav")!r}))
            engine.play(np.full((48000 * 30, 2), 0.25, np.float32), at=0)
            engine.start()
            t0 = time.monotonic()
            while engine.running and time.monotonic() - t0 < 20:
                time.sleep(0.01)
            result = {{"running": engine.running,
                       "error": engine.stats().sink["error"],
                       "frames": engine.stats().sink["frames"]}}
            try:
                engine.close()
                result["raised"] = None
            except SinkError as e:
                result["raised"] = str(e)
            print(json.dumps(result))
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["running"] is False
        assert "big.wav" in result["error"] and "failed" in result["error"]
        assert result["raised"] == result["error"]
        assert 0 < result["frames"] * 8 <= 1 << 20  # it wrote until the limit, not past it


class _Recording(Sink):
    """A sink that consumes nothing and records the engine's calls."""

    name = "recording"

    def __init__(self, fail_open: bool = False) -> None:
        self.calls: list[tuple] = []
        self.fail_open = fail_open

    def open(self, context) -> None:
        super().open(context)
        self.calls.append(("open", context.running, context.output is not None))
        if self.fail_open:
            raise ValueError("refused")

    def start(self) -> None:
        self.calls.append(("start", self.context.running))

    def stop(self) -> None:
        self.calls.append(("stop", self.context.running))

    def drain(self) -> None:
        self.calls.append(("drain", self.context.running))

    def close(self) -> None:
        self.calls.append(("close",))


class TestSinkProtocol:
    """The engine drives any Sink object in the documented order (streamcore/sinks/base.py)."""

    def test_call_order_and_stats(self):
        sink = _Recording()
        engine = streamcore.Engine(sink=sink)
        assert engine.sink is sink and engine.sink_object is sink
        engine.start()
        assert engine.stats().sink == {"name": "recording", "error": None}
        engine.close()
        assert sink.calls == [("open", False, True), ("start", True), ("stop", True),
                              ("drain", False), ("close",)]

    def test_a_refusing_open_leaves_the_engine_stopped(self):
        sink = _Recording(fail_open=True)
        engine = streamcore.Engine(sink=sink)
        with pytest.raises(ValueError, match="refused"):
            engine.start()
        assert not engine.running and sink.calls == [("open", False, True), ("close",)]
        engine.close()

    def test_unknown_sink_names_the_choices(self):
        with pytest.raises(ValueError, match="Sink"):
            streamcore.Engine(sink="speakers")
