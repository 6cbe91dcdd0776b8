"""Streams have ends (issue 14): every pipe, file, FIFO and socket output holds exactly what
was played, frame by frame, through the API and the CLI into real consumers (cat, sox,
ffmpeg, pv), whatever the reader does to the pipe."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from streamcore import Engine
from streamcore.errors import SinkError
from streamcore.sinks.pipe import PipeSink
from tests.services.common import require_program, require_root

CHANNELS = 2
RATE = 48000
FORMATS = {"s16le": "int16", "f32le": "float32", "wav": "int16"}
# Not a whole number of periods, so the end falls inside one.
FRAMES = 50_000 + 37


def ramp(frames: int, dtype: str) -> np.ndarray:
    """(frames, 2) float32 whose every frame is distinct and converts to ``dtype`` exactly."""
    i = np.arange(frames, dtype=np.int64)
    if dtype == "int16":  # k / 32768 for distinct k: int16 is k itself
        left, right = (i * 7) % 65536 - 32768, (i * 13 + 5) % 65536 - 32768
        return (np.column_stack([left, right]) / 32768).astype(np.float32)
    left, right = i % (1 << 23), (i * 3 + 1) % (1 << 23)
    return (np.column_stack([left, right]) / float(1 << 23)).astype(np.float32)


def expected_bytes(frames: np.ndarray, dtype: str) -> bytes:
    if dtype == "int16":
        return np.round(frames * 32768).astype("<i2").tobytes()
    return frames.astype("<f4").tobytes()


def samples(data: bytes, fmt: str) -> bytes:
    """The sample bytes of a stream (a WAV stream's 44-byte header removed)."""
    if fmt == "wav":
        assert data[:4] == b"RIFF" and data[36:40] == b"data", data[:44]
        return data[44:]
    return data


class Target:
    """A place the sink writes to, and what arrived there once the sink is closed."""

    def __init__(self, kind: str, tmp_path: pathlib.Path) -> None:
        self.kind, self.out = kind, tmp_path / "arrived"
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None
        if kind == "pipe":  # a reader process
            r, self.fd = os.pipe()
            with open(self.out, "wb") as f:
                self.proc = subprocess.Popen(["cat"], stdin=r, stdout=f)
            os.close(r)
        elif kind == "file":
            self.fd = os.open(self.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        elif kind == "fifo":
            fifo = tmp_path / "fifo"
            os.mkfifo(fifo)
            with open(self.out, "wb") as f:
                self.proc = subprocess.Popen(["cat", str(fifo)], stdout=f)
            self.fd = os.open(fifo, os.O_WRONLY)
        elif kind == "socket":  # a TCP peer on 127.0.0.1
            server = socket.create_server(("127.0.0.1", 0))
            self.sock = socket.create_connection(server.getsockname())
            peer, _ = server.accept()
            server.close()
            self.fd = self.sock.fileno()
            self.thread = threading.Thread(target=self._receive, args=(peer,))
            self.thread.start()
        else:
            raise ValueError(kind)

    def _receive(self, peer: socket.socket) -> None:
        with peer, open(self.out, "wb") as f:
            while chunk := peer.recv(1 << 16):
                f.write(chunk)

    def arrived(self) -> bytes:
        """Close our end and return everything the consumer got."""
        if self.kind == "socket":
            self.sock.close()
            assert self.thread is not None
            self.thread.join(30)
        else:
            os.close(self.fd)
        if self.proc is not None:
            assert self.proc.wait(timeout=30) == 0
        return self.out.read_bytes()


@pytest.mark.parametrize("zero_copy", [None, True, False], ids=["default", "zc", "copy"])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("kind", ["pipe", "file", "fifo", "socket"])
def test_the_output_is_exactly_what_was_played(kind, fmt, zero_copy, tmp_path):
    """A ramp of distinct frames, played with drain(): no frame missing, duplicated or
    reordered, no silence before or after, in every target, format and copy mode."""
    dtype = FORMATS[fmt]
    frames = ramp(FRAMES, dtype)
    target = Target(kind, tmp_path)
    sink = PipeSink(target.fd, format=fmt, zero_copy=zero_copy)
    engine = Engine(blocksize=256, channels=CHANNELS, sink=sink, dtype=dtype, realtime=False)
    try:
        engine.play(frames)  # queued before start: it begins at output frame 0
        assert engine.drain(timeout=60)
        assert engine.end_frame == -1 or engine.end_frame == FRAMES
        stats = sink.stats()
    finally:
        engine.close()
    data = target.arrived()
    assert samples(data, fmt) == expected_bytes(frames, dtype)
    assert stats["bytes"] == len(data)
    if fmt == "wav" and kind == "file":  # a seekable target gets the real sizes
        assert int.from_bytes(data[40:44], "little") == len(data) - 44
    if zero_copy is False or kind == "socket":
        assert not stats["zero_copy"]


def test_nothing_is_rendered_while_idle_nor_before_the_first_voice(tmp_path):
    """A fast reader and a started engine with nothing to play for 0.3 s: the file gets no
    silence, then exactly the two voices played one after the other (with waits between)."""
    path = tmp_path / "out.raw"
    a, b = ramp(12_345, "float32"), ramp(20_000, "float32")[::-1].copy()
    with open(path, "wb") as f:
        sink = PipeSink(f, format="f32le")
        engine = Engine(blocksize=128, channels=CHANNELS, sink=sink, realtime=False)
        try:
            engine.start()
            time.sleep(0.3)
            assert sink.stats()["bytes"] == 0
            assert engine.play(a).wait(timeout=30)
            time.sleep(0.2)
            engine.play(b)
            assert engine.drain(timeout=30)
        finally:
            engine.close()
    got = np.fromfile(path, dtype="<f4").reshape(-1, CHANNELS)
    # b starts at the period after a's last frame: the rest of that period is the only silence.
    gap = -len(a) % 128
    assert got.shape[0] == len(a) + gap + len(b)
    assert np.array_equal(got[:len(a)], a)
    assert not got[len(a):len(a) + gap].any()
    assert np.array_equal(got[len(a) + gap:], b)


def test_a_finished_stream_voice_plays_its_tail_then_ends(tmp_path):
    """Stream voice: write, finish(), drain: every frame written is in the file, nothing
    after, and the voice ends as 'finished' (no underrun counted for the wait on Python)."""
    path = tmp_path / "out.raw"
    frames = ramp(30_001, "float32")
    with open(path, "wb") as f:
        engine = Engine(blocksize=128, channels=CHANNELS, sink=PipeSink(f, format="f32le"),
                        realtime=False)
        try:
            voice = engine.stream(channels=CHANNELS)
            engine.start()
            done = 0
            while done < len(frames):  # a producer slower than the reader: it never starves
                done += voice.write(frames[done:done + 1000])
                time.sleep(0.001)
            voice.finish()
            assert voice.wait(timeout=30) and voice.end_reason == "finished"
            assert engine.drain(timeout=30)
            underruns = voice.stats()["underruns"]
        finally:
            engine.close()
    assert np.array_equal(np.fromfile(path, dtype="<f4").reshape(-1, CHANNELS), frames)
    assert underruns == 0


def test_drain_on_a_device_clock_plays_out_and_stops():
    """The null sink is a clock: drain returns once the voice is done and its frames left the
    ring, and the engine is stopped."""
    with Engine(blocksize=256, sink="null", realtime=False) as engine:
        voice = engine.play(np.zeros((4800, 2), np.float32))
        assert engine.drain(timeout=10)
        assert voice.done and not engine.running
        assert engine.end_frame == -1 or engine.end_frame >= 4800


def test_drain_times_out_on_a_looping_voice_and_the_engine_runs_on():
    with Engine(blocksize=256, sink="null", realtime=False) as engine:
        voice = engine.play(np.zeros((480, 2), np.float32), loop=True)
        assert not engine.drain(timeout=0.2)
        assert engine.running and not voice.done
        voice.stop(fade=0)
        assert engine.drain(timeout=10)


@pytest.mark.parametrize("bad", [-1, float("nan"), "1"])
def test_drain_refuses_a_bad_timeout(bad):
    with Engine(sink="null", realtime=False) as engine, pytest.raises((ValueError, TypeError)):
        engine.drain(timeout=bad)


def test_close_drain_plays_what_is_queued(tmp_path):
    path = tmp_path / "out.raw"
    frames = ramp(7_777, "float32")
    with open(path, "wb") as f:
        engine = Engine(blocksize=64, channels=CHANNELS, sink=PipeSink(f, format="f32le"),
                        realtime=False)
        engine.play(frames)
        engine.close(drain=True)
    assert np.array_equal(np.fromfile(path, dtype="<f4").reshape(-1, CHANNELS), frames)


class TestReadersThatMoveOrResizeThePipe:
    """What pv does (splice stdin to stdout), and a reader that enlarges the pipe: exact."""

    RELAY = """
import os, sys
while True:
    n = os.splice(0, 1, 1 << 16)
    if n == 0:
        break
"""

    ENLARGER = """
import fcntl, os, sys, time
F_SETPIPE_SZ = 1031
out = open(sys.argv[1], "wb")
got = 0
while got < 1 << 18:  # mid-stream, once the sink is writing:
    chunk = os.read(0, 4096)
    out.write(chunk)
    got += len(chunk)
fcntl.fcntl(0, F_SETPIPE_SZ, 1 << 20)  # the reader makes the pipe 16 times larger
time.sleep(0.2)
while chunk := os.read(0, 4096):
    out.write(chunk)
    time.sleep(0.0002)
"""

    @pytest.mark.parametrize("zero_copy", [None, False])
    def test_a_splicing_relay(self, zero_copy, tmp_path):
        out = tmp_path / "out.raw"
        r, w = os.pipe()
        with open(out, "wb") as f:
            relay = subprocess.Popen([sys.executable, "-c", self.RELAY], stdin=r,
                                     stdout=subprocess.PIPE)
            cat = subprocess.Popen(["cat"], stdin=relay.stdout, stdout=f)
        relay.stdout.close()
        os.close(r)
        frames = ramp(200_000, "float32")
        try:
            engine = Engine(blocksize=256, channels=CHANNELS,
                            sink=PipeSink(w, format="f32le", zero_copy=zero_copy),
                            realtime=False)
            engine.play(frames)
            assert engine.drain(timeout=60)
            engine.close()
        finally:
            os.close(w)
        assert relay.wait(30) == 0 and cat.wait(30) == 0
        assert np.array_equal(np.fromfile(out, dtype="<f4").reshape(-1, CHANNELS), frames)

    @pytest.mark.parametrize("zero_copy", [None, True])
    def test_a_reader_that_enlarges_the_pipe(self, zero_copy, tmp_path):
        out = tmp_path / "out.raw"
        r, w = os.pipe()
        reader = subprocess.Popen([sys.executable, "-c", self.ENLARGER, str(out)], stdin=r)
        os.close(r)
        frames = ramp(400_000, "float32")
        try:
            sink = PipeSink(w, format="f32le", pipe_size=64 * 1024, zero_copy=zero_copy)
            engine = Engine(blocksize=256, channels=CHANNELS, sink=sink, realtime=False)
            engine.play(frames)
            assert engine.drain(timeout=120)
            stats = sink.stats()
            engine.close()
        finally:
            os.close(w)
        assert reader.wait(30) == 0
        assert np.array_equal(np.fromfile(out, dtype="<f4").reshape(-1, CHANNELS), frames)
        if zero_copy:
            assert stats["zero_copy"] and stats["resized"] > 0


# ---- the CLI into real consumers -----------------------------------------------------------

def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamcore", *args]


@pytest.fixture(scope="module")
def ramp_wav(tmp_path_factory) -> tuple[pathlib.Path, np.ndarray]:
    import soundfile as sf

    frames = ramp(FRAMES, "int16")
    path = tmp_path_factory.mktemp("cli") / "ramp.wav"
    sf.write(path, frames, RATE, subtype="PCM_16")
    return path, np.round(frames * 32768).astype(np.int16)


def read_wav(data: bytes) -> np.ndarray:
    return np.frombuffer(samples(data, "wav"), dtype="<i2").reshape(-1, CHANNELS)


def test_cli_pipe_into_a_regular_file(ramp_wav, tmp_path):
    path, expected = ramp_wav
    out = tmp_path / "out.wav"
    with open(out, "wb") as f:
        subprocess.run(cli("play", str(path), "--pipe", "-q"), stdout=f, check=True,
                       timeout=60)
    data = out.read_bytes()
    assert np.array_equal(read_wav(data), expected)
    assert int.from_bytes(data[40:44], "little") == expected.nbytes  # real sizes


@pytest.mark.parametrize("consumer", ["sox", "ffmpeg", "pv"])
def test_cli_pipe_into_a_consumer(consumer, ramp_wav, tmp_path):
    path, expected = ramp_wav
    program = require_program(consumer, consumer)
    command = {"sox": [program, "-t", "wav", "-", "-t", "wav", "-"],
               "ffmpeg": [program, "-loglevel", "error", "-f", "wav", "-i", "-", "-f", "wav",
                          "-"],
               "pv": [program, "-q"]}[consumer]
    out = tmp_path / "out.wav"
    with open(out, "wb") as f:
        player = subprocess.Popen(cli("play", str(path), str(path), "--pipe", "-q"),
                                  stdout=subprocess.PIPE)
        subprocess.run(command, stdin=player.stdout, stdout=f, check=True, timeout=60)
        player.stdout.close()
    assert player.wait(60) == 0
    got = out.read_bytes()
    start = got.index(b"data") + 8  # ffmpeg writes a longer header (LIST chunk)
    arrived = np.frombuffer(got[start:], dtype="<i2").reshape(-1, CHANNELS)
    assert np.array_equal(arrived, np.concatenate([expected, expected]))


def test_cli_gapless_resampling_joins_like_one_file(tmp_path):
    """Two halves of one 44.1 kHz file played at 48 kHz: the join is as clean as resampling
    the whole file at once (each half resampled on its own clicked at the join)."""
    import soundfile as sf

    from streamcore.playback import resample

    t = np.arange(44100 * 2) / 44100
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    halves = [tmp_path / "a.wav", tmp_path / "b.wav"]
    sf.write(halves[0], tone[:44100], 44100, subtype="FLOAT")
    sf.write(halves[1], tone[44100:], 44100, subtype="FLOAT")
    out = tmp_path / "out.raw"
    with open(out, "wb") as f:
        subprocess.run(cli("play", *map(str, halves), "--rate", "48000", "--pipe", "-q"),
                       stdout=f, check=True, timeout=60)
    got = np.frombuffer(out.read_bytes()[44:], dtype="<i2").reshape(-1, CHANNELS)[:, 0] / 32768
    whole = resample(tone[:, None], 44100, 48000)[:, 0]
    assert got.shape[0] == whole.shape[0]
    join = 48000  # the halves meet here
    around = slice(join - 200, join + 200)
    error = np.abs(got[around] - whole[around]).max()
    assert error <= 1.5 / 32768  # int16 rounding only


def test_cli_realtime_pace_rtp_to_a_second_ffmpeg(tmp_path):
    """`streamcore play --pipe --realtime | ffmpeg -f rtp`, received by a second ffmpeg from
    the SDP on 127.0.0.1: the received samples equal the played ones, and the stream takes its
    own length (within 5%) to arrive."""
    import soundfile as sf

    ffmpeg = require_program("ffmpeg", "ffmpeg")
    seconds = 4.0
    rng = np.random.default_rng(5)
    noise = rng.integers(-8000, 8000, (int(RATE * seconds), CHANNELS)).astype(np.int16)
    path = tmp_path / "noise.wav"
    sf.write(path, noise, RATE, subtype="PCM_16")
    # The sender sends to `relay`, which notes when each packet arrives and passes it on to
    # the receiver's port (ffmpeg's own output comes in bursts: it probes and buffers first).
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind(("127.0.0.1", 0))
    relay.settimeout(0.5)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    port -= port % 2  # RTP on an even port, RTCP on the next
    arrivals: list[float] = []
    running = threading.Event()
    running.set()

    def pass_on() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            while running.is_set():
                try:
                    packet = relay.recv(65536)
                except TimeoutError:
                    continue
                arrivals.append(time.monotonic())
                out.sendto(packet, ("127.0.0.1", port))

    sdp = tmp_path / "rx.sdp"
    sdp.write_text(f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=streamcore\nc=IN IP4 127.0.0.1\n"
                   f"t=0 0\nm=audio {port} RTP/AVP 97\na=rtpmap:97 L16/{RATE}/{CHANNELS}\n")
    received = tmp_path / "rx.raw"
    receiver = subprocess.Popen([ffmpeg, "-loglevel", "error", "-protocol_whitelist",
                                 "file,udp,rtp", "-i", str(sdp), "-f", "s16le", "-c:a",
                                 "pcm_s16le", str(received)], stdin=subprocess.DEVNULL)
    relay_thread = threading.Thread(target=pass_on)
    relay_thread.start()
    try:
        time.sleep(1.0)  # listening
        # Told not to probe, ffmpeg sends as its input comes (else it first reads a second of
        # it and sends that in one burst): README, "Streaming to the network".  It starts
        # first, so it reads from the first frame on (what a late reader finds in the pipe
        # comes in one burst, whoever paces it).
        r, w = os.pipe()
        sender = subprocess.Popen([ffmpeg, "-loglevel", "error", "-probesize", "32",
                                   "-analyzeduration", "0", "-f", "wav", "-i", "-",
                                   "-c:a", "pcm_s16be", "-f", "rtp", "-payload_type", "97",
                                   f"rtp://127.0.0.1:{relay.getsockname()[1]}"],
                                  stdin=r, stdout=subprocess.DEVNULL)
        os.close(r)
        time.sleep(1.0)
        player = subprocess.Popen(cli("play", str(path), "--pipe", "--realtime", "-q"),
                                  stdout=w)
        os.close(w)
        assert player.wait(60) == 0 and sender.wait(30) == 0
        time.sleep(1.0)  # the last packets reach the receiver (it writes them out at exit)
    finally:
        receiver.send_signal(2)  # SIGINT: ffmpeg ends its output cleanly
        receiver.wait(30)
        running.clear()
        relay_thread.join(5)
        relay.close()
    got = np.fromfile(received, dtype="<i2").reshape(-1, CHANNELS)
    assert np.array_equal(got, noise)
    # After its start (ffmpeg opens its output while our first packets wait in the pipe, and
    # then sends them in a burst) N seconds of audio arrive in N seconds: the last three
    # quarters of the packets (equal sizes) over three quarters of the stream's length.
    quarter = len(arrivals) // 4
    took = arrivals[-1] - arrivals[quarter]
    share = (len(arrivals) - 1 - quarter) / (len(arrivals) - 1)
    # Load can only make it slower (a busy VM once took 3.20 s for 3.0), never faster: the
    # bound that shows the pacing is the lower one; the ratio is printed.
    print(f"\nRTP pacing: {took:.3f} s for {share * seconds:.3f} s of audio")
    assert took >= 0.95 * share * seconds, (took, share, len(arrivals))


# ---- failures: the API raises, the CLI exits 1 with one line ------------------------------

@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 KiB tmpfs (root only)."""
    require_root("mounting a small tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_enospc_raises_from_the_api(small_tmpfs):
    with open(small_tmpfs / "out.raw", "wb") as f:
        engine = Engine(blocksize=256, channels=CHANNELS, sink=PipeSink(f, format="f32le"),
                        realtime=False)
        engine.play(ramp(100_000, "float32"))
        with pytest.raises(SinkError, match="No space left"):
            engine.drain(timeout=30)
        with pytest.raises(SinkError, match="No space left"):  # the sink's, once
            engine.close()
        engine.close()


def test_enospc_is_one_line_from_the_cli(small_tmpfs, ramp_wav):
    path, _ = ramp_wav
    with open(small_tmpfs / "out.wav", "wb") as f:
        run = subprocess.run(cli("play", str(path), "--pipe"), stdout=f,
                             stderr=subprocess.PIPE, text=True, timeout=60)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if line.startswith("streamcore:")]
    assert len(errors) == 1 and "No space left" in errors[0], run.stderr
    assert "figures:" not in run.stderr  # only with -v


def test_a_reader_that_goes_away_is_one_line_from_the_cli(ramp_wav):
    path, _ = ramp_wav
    player = subprocess.Popen(cli("play", str(path), str(path), str(path), "--pipe",
                                  "--realtime"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    player.stdout.read(4096)
    player.stdout.close()  # the reader goes away
    err = player.stderr.read().decode()
    player.wait(timeout=60)
    assert player.returncode == 1
    errors = [line for line in err.splitlines() if line.startswith("streamcore:")]
    assert len(errors) == 1 and "EPIPE" in errors[0], err


def test_the_cli_shows_figures_of_a_failure_with_verbose(small_tmpfs, ramp_wav):
    path, _ = ramp_wav
    with open(small_tmpfs / "out.wav", "wb") as f:
        run = subprocess.run(cli("play", str(path), "--pipe", "-v"), stdout=f,
                             stderr=subprocess.PIPE, text=True, timeout=60)
    assert run.returncode == 1 and "figures:" in run.stderr


def test_realtime_without_pipe_is_a_usage_error(ramp_wav):
    path, _ = ramp_wav
    run = subprocess.run(cli("play", str(path), "--null", "--realtime"), capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "--realtime" in run.stderr


def test_close_from_another_thread_ends_a_waiting_drain():
    """drain() waits on a looping voice; another thread closes the engine: drain raises
    EngineClosedError at once instead of waiting forever, and close() is not held up."""
    from streamcore.errors import EngineClosedError

    engine = Engine(blocksize=256, sink="null", realtime=False)
    engine.play(np.zeros((480, 2), np.float32), loop=True)
    outcome: list[object] = []

    def drain() -> None:
        try:
            outcome.append(engine.drain())
        except EngineClosedError as e:
            outcome.append(e)

    waiter = threading.Thread(target=drain)
    waiter.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    engine.close()
    waiter.join(5)
    assert not waiter.is_alive() and time.monotonic() - t0 < 5
    assert len(outcome) == 1 and isinstance(outcome[0], EngineClosedError), outcome
