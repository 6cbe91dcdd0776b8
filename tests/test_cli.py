"""The `streamcore` command as a user runs it: in a subprocess, from the installed package."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf


def run_cli(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamcore", *args], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


class TestInfo:
    """`python -m streamcore` reports what the machine offers."""

    def test_json_has_every_field(self):
        """--json prints one JSON object with every documented section."""
        done = run_cli("--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert set(report) >= {"version", "native", "portaudio", "mlock", "rlimits",
                               "capabilities", "rtkit"}
        assert report["native"]["loaded"] is True
        assert "-Wall" in report["native"]["cflags"]
        for name in ("RLIMIT_MEMLOCK", "RLIMIT_RTPRIO", "RLIMIT_RTTIME"):
            assert set(report["rlimits"][name]) == {"soft", "hard"}
        assert set(report["capabilities"]) >= {"CAP_SYS_NICE", "CAP_IPC_LOCK"}
        assert isinstance(report["rtkit"]["answers"], bool)
        assert isinstance(report["mlock"]["can_lock"], bool)

    def test_text_names_the_native_module(self):
        """The plain report says where the native core was loaded from."""
        done = run_cli()
        assert done.returncode == 0, done.stderr
        assert "native core: " in done.stdout and "_native" in done.stdout

    def test_dead_bus_costs_at_most_the_timeout(self, tmp_path):
        """A system bus address that points nowhere is reported, not waited on."""
        env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/nothing.sock",
               "PATH": "/usr/bin:/bin"}
        done = run_cli("--json", "--bus-timeout", "0.5", env=env)
        assert done.returncode == 0, done.stderr
        rtkit = json.loads(done.stdout)["rtkit"]
        assert rtkit["answers"] is False
        assert "no system bus" in rtkit["error"]

    def test_bad_option_is_a_usage_error(self):
        """A bad option value exits 2 with one line on stderr, no traceback."""
        done = run_cli("--bus-timeout", "-1")
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert "--bus-timeout" in done.stderr


@pytest.mark.parametrize("module", ["streamcore", "streamcore._native"])
def test_imports(module):
    """The package and its compiled core import."""
    __import__(module)


# ---- play, devices, stats, demo -----------------------------------------------------------

RATE = 48000


def no_device_env(tmp_path, **extra: str) -> dict[str, str]:
    """The environment of a machine without a sound device: no JACK server under that name
    (even while the session's JACK fixture runs), temporary files in ``tmp_path``."""
    return {**os.environ, "JACK_DEFAULT_SERVER": f"streamcore-absent-{os.getpid()}",
            "TMPDIR": str(tmp_path), **extra}


def write_tone(path, seconds=0.5, rate=RATE, channels=2, freq=440.0, level=0.25):
    t = np.arange(round(seconds * rate)) / rate
    wave = (level * np.sin(2 * np.pi * freq * t + 0.5)).astype(np.float32)  # 1st frame != 0
    frames = np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave
    if channels == 2:
        frames[:, 1] *= 0.5  # tell left from right
    if str(path).endswith(".wav"):
        sf.write(str(path), frames, rate, subtype="FLOAT")
        return np.asarray(frames, dtype=np.float32).reshape(len(t), channels)
    sf.write(str(path), frames, rate)  # FLAC, OGG: what they hold is what they decode to
    return sf.read(str(path), dtype="float32", always_2d=True)[0]


def heard(path) -> np.ndarray:
    """The audio in ``path`` from its first non-silent frame on."""
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    nonzero = np.flatnonzero(np.abs(data).max(axis=1) > 0)
    assert nonzero.size, f"{path} is silent"
    return data[nonzero[0]:]


def crossings_per_second(signal_: np.ndarray, rate: int) -> float:
    signs = np.signbit(signal_)
    return np.count_nonzero(signs[1:] != signs[:-1]) / 2 / (len(signal_) / rate)


def one_line_error(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]


class TestPlayWithoutDevice:
    """With no sound device, play falls back to the null sink plus a WAV file, and says so."""

    def test_fallback_file_holds_exactly_what_was_played(self, tmp_path):
        """One line says there is no device; the WAV file holds the input bit-exact."""
        source = write_tone(tmp_path / "tone.wav")
        done = run_cli("play", str(tmp_path / "tone.wav"), env=no_device_env(tmp_path))
        assert done.returncode == 0, done.stderr
        first = done.stderr.splitlines()[0]
        assert first.startswith("no sound device") and "tone.wav" not in first
        wav = tmp_path / "streamcore-play.wav"
        assert str(wav) in first
        out = heard(wav)
        assert len(out) >= len(source)
        np.testing.assert_array_equal(out[:len(source)], source)
        assert not out[len(source):].any()
        assert "glitches 0 (" in done.stdout and "wrote " + str(wav) in done.stdout
        assert "0:00.5 / 0:00.5" in done.stderr  # the progress line reached the end

    def test_other_rate_is_resampled_never_played_fast(self, tmp_path):
        """A 44.1 kHz file on a 48 kHz engine keeps its pitch and duration (soxr)."""
        write_tone(tmp_path / "cd.wav", seconds=1.0, rate=44100, channels=1, freq=1000.0)
        out = tmp_path / "out.wav"
        done = run_cli("play", str(tmp_path / "cd.wav"), "--rate", "48000", "--out", str(out),
                       "-q", env=no_device_env(tmp_path))
        assert done.returncode == 0, done.stderr
        assert "resampled to 48000 Hz with soxr" in done.stdout
        assert sf.info(str(out)).samplerate == 48000
        body = heard(out)
        active = body[: np.flatnonzero(np.abs(body[:, 0]) > 1e-3)[-1] + 1]
        assert abs(len(active) - 48000) < 100  # one second, not 0.92 s
        assert abs(crossings_per_second(active[:, 0], 48000) - 1000.0) < 5
        np.testing.assert_array_equal(active[:, 0], active[:, 1])  # mono: both sides, same

    def test_gain_in_db(self, tmp_path):
        """--gain -6.0206 halves the amplitude."""
        source = write_tone(tmp_path / "tone.wav", seconds=0.3)
        out = tmp_path / "out.wav"
        done = run_cli("play", str(tmp_path / "tone.wav"), "--gain", "-6.0206", "--out",
                       str(out), "-q", env=no_device_env(tmp_path))
        assert done.returncode == 0, done.stderr
        np.testing.assert_allclose(heard(out)[:len(source)], source / 2, atol=1e-5)

    def test_files_play_one_after_another(self, tmp_path):
        """Two files play back to back, gapless."""
        a = write_tone(tmp_path / "a.wav", seconds=0.2, freq=300.0)
        b = write_tone(tmp_path / "b.flac", seconds=0.2, freq=600.0)
        out = tmp_path / "out.wav"
        done = run_cli("play", str(tmp_path / "a.wav"), str(tmp_path / "b.flac"), "--out",
                       str(out), "-q", env=no_device_env(tmp_path))
        assert done.returncode == 0, done.stderr
        np.testing.assert_array_equal(heard(out)[:len(a) + len(b)], np.concatenate([a, b]))

    def test_pipe_writes_a_wav_stream_to_stdout(self, tmp_path):
        """--pipe: stdout is a WAV stream of the file (int16), every message on stderr."""
        source = write_tone(tmp_path / "tone.wav", seconds=0.3)
        done = subprocess.run([sys.executable, "-m", "streamcore", "play",
                               str(tmp_path / "tone.wav"), "--pipe"], capture_output=True,
                              timeout=60, env=no_device_env(tmp_path))
        assert done.returncode == 0, done.stderr
        assert done.stdout[:4] == b"RIFF" and done.stdout[8:12] == b"WAVE"
        assert b"playing" in done.stderr and b"figures" in done.stderr
        # The mixer wrote the pipe itself: no wake-up latency is claimed for it.
        assert b"written by the mixer" in done.stderr
        assert b"wake-up latency: none to measure" in done.stderr
        samples = np.frombuffer(done.stdout[44:], dtype="<i2").reshape(-1, 2)
        start = np.flatnonzero(np.abs(samples).max(axis=1) > 0)[0]
        got = samples[start:start + len(source)].astype(np.float64) / 32767
        np.testing.assert_allclose(got, source, atol=2 / 32767)

    def test_ctrl_c_fades_out(self, tmp_path):
        """SIGINT while looping: exit 130 after a fade to silence (no click) in the output."""
        sf.write(str(tmp_path / "dc.wav"), np.full((4800, 2), 0.25, np.float32), RATE,
                 subtype="FLOAT")
        out = tmp_path / "out.wav"
        proc = subprocess.Popen([sys.executable, "-m", "streamcore", "play",
                                 str(tmp_path / "dc.wav"), "--loop", "--fade", "0.05", "--out",
                                 str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=no_device_env(tmp_path))
        deadline = time.monotonic() + 30
        while (not out.exists() or out.stat().st_size < 200_000) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        assert "faded out over 50 ms" in stderr and "Traceback" not in stderr
        body = heard(out)[:, 0]
        loud = np.flatnonzero(body > 0)
        tail = body[loud[-1] - 2400 - 200: loud[-1] + 1]
        assert tail[0] == pytest.approx(0.25)
        assert np.all(np.diff(tail) <= 1e-7)  # only ever going down
        assert 2300 <= np.count_nonzero((tail > 0) & (tail < 0.2499)) <= 2500  # ~50 ms ramp
        assert not body[loud[-1] + 1:].any()

    def test_sigterm_stops_like_ctrl_c(self, tmp_path):
        """SIGTERM also fades out and prints the figures."""
        write_tone(tmp_path / "tone.wav", seconds=0.2)
        proc = subprocess.Popen([sys.executable, "-m", "streamcore", "play",
                                 str(tmp_path / "tone.wav"), "--loop", "--null"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=no_device_env(tmp_path))
        time.sleep(1.5)
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        assert "faded out" in stderr and "figures:" in stdout


class TestPlayFailures:
    """Bad input: one line on stderr, exit 2 for usage errors, 1 for runtime failures."""

    def test_missing_file(self, tmp_path):
        done = run_cli("play", str(tmp_path / "nope.wav"), env=no_device_env(tmp_path))
        one_line_error(done, 2, "no such file", "nope.wav")

    def test_undecodable_file(self, tmp_path):
        (tmp_path / "junk.wav").write_bytes(b"RIFF" + os.urandom(200))
        done = run_cli("play", str(tmp_path / "junk.wav"), env=no_device_env(tmp_path))
        one_line_error(done, 2, "cannot decode", "junk.wav")

    def test_debug_shows_the_traceback(self, tmp_path):
        done = run_cli("play", str(tmp_path / "nope.wav"), "--debug",
                       env=no_device_env(tmp_path))
        assert done.returncode != 0 and "Traceback" in done.stderr

    @pytest.mark.parametrize("option", [["--gain", "40"], ["--gain", "nan"],
                                        ["--blocksize", "8"], ["--periods", "1"],
                                        ["--rate", "fast"], ["--null", "--pipe"]])
    def test_bad_option_value(self, tmp_path, option):
        write_tone(tmp_path / "tone.wav", seconds=0.1)
        done = run_cli("play", str(tmp_path / "tone.wav"), *option,
                       env=no_device_env(tmp_path))
        one_line_error(done, 2, option[0])

    def test_unknown_device_without_any_device(self, tmp_path):
        write_tone(tmp_path / "tone.wav", seconds=0.1)
        done = run_cli("play", str(tmp_path / "tone.wav"), "--device", "nonesuch",
                       env=no_device_env(tmp_path))
        one_line_error(done, 2, "nonesuch", "--null")

    def test_out_into_a_missing_directory(self, tmp_path):
        write_tone(tmp_path / "tone.wav", seconds=0.1)
        done = run_cli("play", str(tmp_path / "tone.wav"), "--out",
                       str(tmp_path / "no" / "x.wav"), env=no_device_env(tmp_path))
        one_line_error(done, 2, "does not exist")

    def test_closed_stdout_is_a_message_not_a_traceback(self, tmp_path):
        """`streamcore play X --pipe >&-`: one line, exit 2 (an AttributeError before)."""
        write_tone(tmp_path / "tone.wav", seconds=0.2)
        done = subprocess.run([sys.executable, "-m", "streamcore", "play",
                               str(tmp_path / "tone.wav"), "--pipe", "-q"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=no_device_env(tmp_path), timeout=60,
                              preexec_fn=lambda: os.close(1))
        assert done.returncode == 2, done.stderr
        assert "stdout, which is closed" in done.stderr and "Traceback" not in done.stderr

    def test_read_only_stdout_is_refused(self, tmp_path):
        """stdout open for reading only (`1<&0`): refused before anything plays."""
        write_tone(tmp_path / "tone.wav", seconds=0.2)
        with open(os.devnull, "rb") as readonly:
            done = subprocess.run([sys.executable, "-m", "streamcore", "play",
                                   str(tmp_path / "tone.wav"), "--pipe", "-q"],
                                  stdout=readonly, stderr=subprocess.PIPE, text=True,
                                  env=no_device_env(tmp_path), timeout=60)
        assert done.returncode == 1, done.stderr
        assert "reading only" in done.stderr and "Traceback" not in done.stderr

    def test_pipe_reader_going_away_is_a_runtime_failure(self, tmp_path):
        """The reader leaves: exit 1, one line saying so (figures stay on stderr too)."""
        write_tone(tmp_path / "tone.wav", seconds=0.5)
        proc = subprocess.Popen([sys.executable, "-m", "streamcore", "play",
                                 str(tmp_path / "tone.wav"), "--loop", "--pipe", "-q"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=no_device_env(tmp_path))
        proc.stdout.read(100_000)
        proc.stdout.close()  # the reader is gone
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=30) == 1, stderr
        assert "Traceback" not in stderr
        assert "reader went away" in stderr


class TestOtherCommandsWithoutDevice:
    """devices, stats and demo on a machine without a sound device."""

    def test_devices_says_there_is_none(self, tmp_path):
        done = run_cli("devices", env=no_device_env(tmp_path))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("no output device")
        done = run_cli("devices", "--json", env=no_device_env(tmp_path))
        assert json.loads(done.stdout) == {"output_devices": [], "input_devices": []}

    def test_demo_falls_back_and_prints_figures(self, tmp_path):
        """`make demo` here: one line about the missing device, a WAV file, the figures."""
        done = run_cli("demo", env=no_device_env(tmp_path))
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines()[0].startswith("no sound device")
        assert "Traceback" not in done.stderr
        for word in ("figures:", "glitches", "wake-up latency", "realtime:", "taints"):
            assert word in done.stdout
        data, rate = sf.read(str(tmp_path / "streamcore-demo.wav"), always_2d=True)
        assert rate == RATE and 2.0 < len(data) / rate < 3.0
        assert np.abs(data).max() > 0.1

    def test_stats_json(self, tmp_path):
        """stats runs a short session on the null sink and reports the telemetry."""
        done = run_cli("stats", "--null", "--seconds", "0.3", "--json",
                       env=no_device_env(tmp_path))
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        counters = report["counters"]
        assert counters["cycles"] > 0 and counters["frames"] >= 0.25 * RATE
        assert report["wake_latency"]["count"] == counters["cycles"]
        assert report["engine"]["sink"] == "null sink"
        assert isinstance(report["taints"], list)

    def test_stats_text(self, tmp_path):
        done = run_cli("stats", "--null", "--seconds", "0.2", env=no_device_env(tmp_path))
        assert done.returncode == 0, done.stderr
        assert "wake-up latency histogram" in done.stdout


class TestOnJack:
    """The same commands on a real audio server's device (JACK, dummy backend)."""

    def test_devices_lists_jack(self, jack_server):
        done = run_cli("devices", "--json")
        assert done.returncode == 0, done.stderr
        listing = json.loads(done.stdout)
        for kind in ("output_devices", "input_devices"):  # JACK's device does both
            assert any(r["index"] == jack_server.device and "JACK" in r["hostapi"]
                       and r["channels"] == 2 for r in listing[kind]), listing
        text = run_cli("devices").stdout
        assert "outputs:" in text and "inputs:" in text

    def test_play_on_the_device(self, jack_server, tmp_path):
        write_tone(tmp_path / "tone.wav", seconds=0.5)
        done = run_cli("play", str(tmp_path / "tone.wav"), "--device",
                       str(jack_server.device))
        assert done.returncode == 0, done.stderr
        assert "no sound device" not in done.stderr
        assert "JACK" in done.stdout and "device:" in done.stdout
        callbacks = int(done.stdout.split("device: ")[1].split(" callbacks")[0])
        assert callbacks >= 0.5 * RATE / 1024  # the device really played the half second

    def test_play_resamples_for_the_device(self, jack_server, tmp_path):
        """JACK runs at 48 kHz only: a 44.1 kHz file is resampled, and says so."""
        write_tone(tmp_path / "cd.wav", seconds=0.3, rate=44100)
        done = run_cli("play", str(tmp_path / "cd.wav"), "--device", str(jack_server.device),
                       "-q")
        assert done.returncode == 0, done.stderr
        assert "resampled to 48000 Hz with soxr" in done.stdout

    def test_unknown_device_lists_the_devices(self, jack_server, tmp_path):
        write_tone(tmp_path / "tone.wav", seconds=0.1)
        done = run_cli("play", str(tmp_path / "tone.wav"), "--device", "nonesuch")
        one_line_error(done, 2, "nonesuch", "output devices")

    def test_demo_on_the_device(self, jack_server):
        done = run_cli("demo", "--device", str(jack_server.device))
        assert done.returncode == 0, done.stderr
        assert "no sound device" not in done.stderr and "JACK" in done.stdout

    def test_stats_on_the_device(self, jack_server):
        done = run_cli("stats", "--device", str(jack_server.device), "--seconds", "0.5",
                       "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["sink"]["name"] == "device" and report["sink"]["callbacks"] > 0
