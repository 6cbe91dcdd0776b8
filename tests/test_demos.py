"""Each demo runs headless for a few seconds, as a user runs it (`python demos/NAME.py`), on
the null sink or the JACK dummy device, and exits 0 with the figures it promises."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

DEMOS = pathlib.Path(__file__).resolve().parent.parent / "demos"


def run_demo(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def no_device_env() -> dict[str, str]:
    return {**os.environ, "JACK_DEFAULT_SERVER": f"streamcore-absent-{os.getpid()}"}


def figure(text: str, name: str) -> int:
    match = re.search(rf"{name} (\d+)", text)
    assert match, f"no {name!r} in {text!r}"
    return int(match.group(1))


class TestDemos:
    """Every demo in demos/ runs and reports clean figures."""

    def test_every_demo_says_what_to_listen_for(self):
        """Each demo's docstring (or header comment) has a 'Listen for' paragraph."""
        demos = [p for p in sorted(DEMOS.glob("*.py")) + sorted(DEMOS.glob("*.sh"))
                 if not p.name.startswith("_")]  # _demo.py is the demos' shared helper
        assert {p.name for p in demos} >= {"play_file.py", "drum_machine.py", "live_synth.py",
                                           "two_process.py", "pipe_to_aplay.sh"}
        for path in demos:
            assert "Listen for:" in path.read_text(), path.name

    def test_play_file_on_the_device(self, jack_server):
        done = run_demo(str(DEMOS / "play_file.py"))
        assert done.returncode == 0, done.stderr
        assert figure(done.stdout, "xruns") >= 0

    def test_play_file_without_a_device_says_what_to_do(self):
        """No device: the documented NoDeviceError, naming the alternatives."""
        done = run_demo(str(DEMOS / "play_file.py"), env=no_device_env())
        assert done.returncode == 1
        assert "NoDeviceError" in done.stderr and "sink='null'" in done.stderr

    def test_drum_machine_is_sample_accurate(self):
        done = run_demo(str(DEMOS / "drum_machine.py"), "--null", "--bars", "2", "--bpm", "160")
        assert done.returncode == 0, done.stderr
        assert re.search(r"^(\d+) hits played", done.stdout).group(1) == "28"  # 14 hits a bar
        assert figure(done.stdout, "late starts") == 0

    def test_drum_machine_on_the_device(self, jack_server):
        done = run_demo(str(DEMOS / "drum_machine.py"), "--device", str(jack_server.device),
                        "--bars", "1", "--bpm", "200")
        assert done.returncode == 0, done.stderr
        assert figure(done.stdout, "late starts") == 0

    def test_live_synth_has_no_glitch_under_heavy_python(self):
        """The mixer never misses a period while the main thread grinds (0 xruns), and the
        demo reports its voice's underruns.  Those are not asserted to be 0: the generator is
        a normal-priority thread, and on this shared 2-core machine other users' CPU hogs
        have starved it for a second (0 in quiet runs; 156 and 180 periods under load)."""
        # A timer xrun is the mixer waking a whole period late: on this shared VM that also
        # happens with no Python load at all (the code before the core rebuild showed 1-3 in
        # 2 of 4 runs; under a whole suite's load runs gave 3,1,4,1,1 and 2,1,2,1,1), so a
        # run with one is tried again, up to 5 times, as the JACK test does with server
        # xruns, and the quietest may have one: heavy Python that glitched the mixer gives
        # tens to hundreds in every run (the GIL on the audio path did).
        xruns = []
        for _attempt in range(5):
            done = run_demo(str(DEMOS / "live_synth.py"), "--null", "--seconds", "3")
            assert done.returncode == 0, done.stderr
            assert figure(done.stdout, "busywork rounds") > 0
            assert figure(done.stdout, "voice underruns") >= 0
            xruns.append(figure(done.stdout, "xruns"))
            if xruns[-1] == 0:
                break
        assert min(xruns) <= 1, f"xruns in each of 5 runs: {xruns}"

    def test_busy_main_thread_does_not_starve_the_process_producer(self):
        done = run_demo(str(DEMOS / "busy_main_thread.py"), "--null", "--seconds", "4")
        assert done.returncode == 0, done.stderr
        assert figure(done.stdout, "process producer underruns") == 0
        print(f"\n{done.stdout.strip()}")  # the thread's figure: measured, not asserted

    def test_two_process_plays_what_the_other_process_wrote(self):
        done = run_demo(str(DEMOS / "two_process.py"), "--null", "--seconds", "1.5")
        assert done.returncode == 0, done.stderr
        assert figure(done.stdout, "played") >= 48000
        assert figure(done.stdout, "voice underruns") == 0

    def test_two_process_producer_dies_with_its_parent(self):
        """SIGKILL the engine process: pdeathsig takes the producer with it."""
        parent = subprocess.Popen([sys.executable, str(DEMOS / "two_process.py"), "--null",
                                   "--seconds", "30"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        children_file = pathlib.Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        deadline = time.monotonic() + 20
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            children = [int(c) for c in children_file.read_text().split()]
            time.sleep(0.05)
        assert children, "the producer never started"
        time.sleep(1.0)  # the producer is past its pdeathsig call and writing
        parent.kill()
        parent.wait()
        parent.stdout.close()
        parent.stderr.close()
        producer = children[0]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                state = pathlib.Path(f"/proc/{producer}/stat").read_text().split()[2]
            except FileNotFoundError:
                break
            if state == "Z":  # dead, waiting to be reaped by init
                break
            time.sleep(0.05)
        else:
            os.kill(producer, signal.SIGKILL)
            pytest.fail("the producer outlived its parent")

    def test_pipe_to_aplay(self):
        """The shell demo into a real aplay (its null PCM: there is no sound card)."""
        env = {**no_device_env(), "PYTHON": sys.executable, "PLAYER": "aplay -q -D null"}
        done = subprocess.run(["sh", str(DEMOS / "pipe_to_aplay.sh")], capture_output=True,
                              text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        assert "zero copy True" in done.stderr
