"""Glitch resistance: streamcore against the tools users pick instead, on the same device and
under the same load, on JACK2 and on PipeWire.

    python -m bench.glitch [--quick] [--smoke] [--out FILE]

For blocksizes 64, 128 and 256, on each server, it plays the same four stereo buffers, mixed,
for the same duration under bench.load (a CPU hog per core + a Python allocation/gc churn
thread in the playing process), with each of:

- streamcore: an Engine on the DeviceSink (C callback), the four buffers as voices;
- python-sounddevice: an OutputStream whose Python callback mixes the four buffers in numpy;
- python-rtmixer (PyPI rtmixer): a Mixer playing the four buffers (play_buffer), its C
  callback mixing them.

JACK2: its own server (dummy backend, 48 kHz, period = blocksize; bench.device._Jack), the
players in this process.  Glitches counted in each window: JACK's xrun notices (a client that
did not finish its cycle in time is one) or PortAudio's output-underflow flags, whichever is
more (PortAudio's JACK host API passes server xruns on as that flag, so one dropout is counted
once, not twice) and, for streamcore, periods its output ring was short (ring underruns).  A
window with no client playing gives JACK's own xruns under the load: the noise floor every
player shares; a window with only jack_metro (JACK's minimal C example client) playing gives
the floor for any client, as each player adds a client process to JACK's cycle.

PipeWire: a headless PipeWire whose quantum is the blocksize (the test suite's fixture,
tests/services/pipewire.py), each player in a child process on pipewire-jack (``python -m
bench.glitch --child NAME ...``: PortAudio and libjack load once per process), where
PortAudio's JACK host lists one device named after the null sink.  PipeWire tells clients of
no xrun (no JACK xrun notice, PortAudio's flags stay 0): the glitches are pw-profiler's missed
cycles of the player's nodes that feed the sink, counted over the window under load only (the
profiler starts after the child's warm-up), plus streamcore's ring underruns.  Floors: the
server with no client under the load (the profiler's late driver cycles; PipeWire's null sink
drives no cycle while nothing follows it, which the row then says) and jack_metro on
pipewire-jack linked to the sink's playback ports.  When PipeWire is missing, that part is
reported as missing with the reason.

Also recorded: the page faults of the audio threads during the window
(bench.memory.thread_faults) and the realtime grant.  Goal for streamcore on each server: at
or below the floor of a minimal C client, and zero where that floor is zero; every ratio is
against a reference measured on the same server in the same run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.harness import Report, bench_main
from bench.load import Load
from bench.memory import faults_of, process_memory

RATE = 48000
BLOCKSIZES = (64, 128, 256)
FLOOR_CLIENT = "JACK with jack_metro (a minimal C client)"
VOICES = 4
WARMUP = 0.5


def _buffers(seconds: float) -> list[np.ndarray]:
    """VOICES stereo float32 buffers of ``seconds`` + margin, pre-scaled so their sum stays
    within [-1, 1] (rtmixer has no gain: every player plays them at gain 1)."""
    frames = int((seconds + WARMUP + 2) * RATE)
    t = np.arange(frames, dtype=np.float32) / RATE
    out = []
    for i in range(VOICES):
        tone = (0.9 / VOICES) * np.sin(2 * np.pi * (220 + 110 * i) * t, dtype=np.float32)
        out.append(np.ascontiguousarray(np.stack([tone, tone[::-1]], axis=1)))
    return out


def _glitches(underflows: int, xruns: int, ring_underruns: int = 0) -> int:
    """Dropouts in a window: a server xrun reaches the client as an underflow flag as well,
    so the larger of the two counts, plus the periods the player's own ring was short."""
    return max(underflows, xruns) + ring_underruns


class _Target:
    """Where a player plays: the PortAudio output device, the server's xrun notices so far (a
    list that grows; JACK2 only, PipeWire sends clients none) and what ends the warm-up."""

    def __init__(self, device: int, xruns: list[float],
                 ready: Callable[[], None] | None = None) -> None:
        self.device = device
        self.xruns = xruns
        self._ready = ready

    def warm_up(self) -> None:
        """Let the player settle for WARMUP seconds, then tell whoever waits that the window
        under load may begin (a PipeWire child: the parent starts the profiler first)."""
        time.sleep(WARMUP)
        if self._ready is not None:
            self._ready()


def _delta(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else after - before


def _realtime_tids() -> list[int]:
    """This process's threads that run a realtime policy (the JACK client's threads, when no
    engine runs)."""
    tids = []
    for name in os.listdir("/proc/self/task"):
        try:
            # without the reset-on-fork flag, which PipeWire's client threads carry
            policy = os.sched_getscheduler(int(name)) & ~os.SCHED_RESET_ON_FORK
            if policy in (os.SCHED_FIFO, os.SCHED_RR):
                tids.append(int(name))
        except OSError:  # the thread ended meanwhile
            pass
    return tids


def _streamcore(target: _Target, buffers, seconds: float, blocksize: int) -> dict[str, Any]:
    from streamcore import Engine
    from streamcore.sinks.device import DeviceSink

    with Engine(samplerate=RATE, blocksize=blocksize,
                sink=DeviceSink(target.device)) as engine:
        for b in buffers:
            engine.play(b)
        target.warm_up()
        before, x0 = engine.stats(), len(target.xruns)
        tids = [engine.mixer_tid, before.sink.get("callback_tid", 0)]
        f0 = faults_of(tids)
        with Load(enabled=True) as load:
            time.sleep(seconds)
        after, x1 = engine.stats(), len(target.xruns)
        f1 = faults_of(tids)
        grant = str(engine.grant)
    s, s0 = after.sink, before.sink
    underflows = s["output_underflows"] - s0["output_underflows"]
    ring = s["underruns"] - s0["underruns"]
    g0 = before.glitches
    return {"glitches": _glitches(underflows, x1 - x0, ring), "output_underflows": underflows,
            "ring_underruns": ring, "jack_xruns": x1 - x0,
            "callbacks": s["callbacks"] - s0["callbacks"],
            "engine_xruns": after.xruns - before.xruns,
            # what the engine itself counted in the window (stats().glitches by place, the
            # stream-voice underruns, the server's xrun notices to its own JACK client: 0
            # under PipeWire, which sends clients none)
            "engine_glitches": {k: v - g0.get(k, 0) for k, v in after.glitches.items()},
            "engine_underruns": after.underruns - before.underruns,
            "server_xruns": _delta(s.get("server_xruns"), s0.get("server_xruns")),
            "host_period": s.get("host_period"), "jack_version": s.get("jack_version"),
            "faults_minor": f1[0] - f0[0], "faults_major": f1[1] - f0[1],
            "fault_threads": "mixer + PortAudio callback thread", "grant": grant,
            "taints": sorted(after.taints), **load.facts}


def _sounddevice(target: _Target, buffers, seconds: float, blocksize: int) -> dict[str, Any]:
    import sounddevice as sd

    state = {"pos": 0, "callbacks": 0, "underflows": 0, "tid": 0}
    total = len(buffers[0])

    def callback(outdata, frames, time_info, status) -> None:
        state["tid"] = threading.get_native_id()
        pos = state["pos"]
        n = min(frames, total - pos)
        mix = buffers[0][pos:pos + n].copy()
        for b in buffers[1:]:
            mix += b[pos:pos + n]
        outdata[:n] = mix
        outdata[n:] = 0
        state["pos"] = pos + n
        state["callbacks"] += 1
        if status.output_underflow:
            state["underflows"] += 1

    with sd.OutputStream(device=target.device, samplerate=RATE, blocksize=blocksize, channels=2,
                         dtype="float32", latency="low", callback=callback):
        target.warm_up()
        c0, u0, x0 = state["callbacks"], state["underflows"], len(target.xruns)
        tids = [state["tid"]]
        f0 = faults_of(tids)
        with Load(enabled=True) as load:
            time.sleep(seconds)
        c1, u1, x1 = state["callbacks"], state["underflows"], len(target.xruns)
        f1 = faults_of(tids)
    return {"glitches": _glitches(u1 - u0, x1 - x0), "output_underflows": u1 - u0,
            "jack_xruns": x1 - x0, "callbacks": c1 - c0,
            "faults_minor": f1[0] - f0[0], "faults_major": f1[1] - f0[1],
            "fault_threads": "the PortAudio callback thread (runs the Python callback)",
            "grant": "JACK's client thread (the server's realtime settings)", **load.facts}


def _rtmixer(target: _Target, buffers, seconds: float, blocksize: int) -> dict[str, Any]:
    import rtmixer

    with rtmixer.Mixer(device=target.device, channels=2, blocksize=blocksize, samplerate=RATE,
                       latency="low") as mixer:
        for b in buffers:
            mixer.play_buffer(b, channels=[1, 2])
        target.warm_up()
        reset = mixer.fetch_and_reset_stats()
        mixer.wait(reset)
        x0 = len(target.xruns)
        tids = _realtime_tids()
        f0 = faults_of(tids)
        with Load(enabled=True) as load:
            time.sleep(seconds)
        fetch = mixer.fetch_and_reset_stats()
        mixer.wait(fetch)
        x1 = len(target.xruns)
        f1 = faults_of(tids)
        st = fetch.stats
        underflows, blocks = int(st.output_underflows), int(st.blocks)
    return {"glitches": _glitches(underflows, x1 - x0), "output_underflows": underflows,
            "jack_xruns": x1 - x0, "callbacks": blocks,
            "faults_minor": f1[0] - f0[0], "faults_major": f1[1] - f0[1],
            "fault_threads": f"the process's {len(tids)} realtime threads (JACK client threads)",
            "grant": "JACK's client thread (the server's realtime settings)", **load.facts}


def _jack_with_c_client(jackd, seconds: float) -> dict[str, Any]:
    """JACK's xruns under the same load with one minimal C client playing (jack_metro, from
    JACK's own example clients, its port connected to the device): the floor for any client,
    as every player adds a client process to JACK's cycle."""
    exe = shutil.which("jack_metro")
    if exe is None:
        raise RuntimeError("jack_metro not found (it comes with jackd2)")
    name = f"bench-metro-{os.getpid()}"
    proc = subprocess.Popen([exe, "-n", name, "-b", "120"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (ports := jackd.watch.get_ports(f"{name}:", is_output=True)):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("jack_metro did not register its port")
            time.sleep(0.05)
        for playback in jackd.watch.get_ports("system:", is_input=True, is_audio=True)[:2]:
            jackd.watch.connect(ports[0], playback)
        time.sleep(WARMUP)
        x0 = len(jackd.xruns)
        with Load(enabled=True) as load:
            time.sleep(seconds)
        x1 = len(jackd.xruns)
    finally:
        proc.terminate()
        proc.wait(10)
    return {"glitches": x1 - x0, "jack_xruns": x1 - x0, "seconds": seconds, **load.facts}


def _jack_alone(jackd, buffers, seconds: float, blocksize: int) -> dict[str, Any]:
    """No client playing: JACK's own xruns under the same load (the machine's noise floor)."""
    x0 = len(jackd.xruns)
    with Load(enabled=True) as load:
        time.sleep(seconds)
    return {"glitches": len(jackd.xruns) - x0, "jack_xruns": len(jackd.xruns) - x0,
            **load.facts}


PLAYERS = {"streamcore": _streamcore, "python-sounddevice (numpy mix in a Python callback)":
           _sounddevice, "python-rtmixer": _rtmixer}
# The players by the short names a PipeWire child is started with (--child NAME).
CHILD_NAMES = {"streamcore": "streamcore",
               "sounddevice": "python-sounddevice (numpy mix in a Python callback)",
               "rtmixer": "python-rtmixer"}
GOAL = "at or below the floor of a minimal C client, and zero where the floor is zero"
JACK_ALONE = "JACK alone (noise floor)"
PW_ALONE = "PipeWire alone (no client)"
PW_FLOOR_CLIENT = "PipeWire with jack_metro (a minimal C client, through pipewire-jack)"
ROOT = Path(__file__).resolve().parent.parent
READY = "bench-glitch-child: warm"  # a child's line when its warm-up is over


def _error(e: BaseException) -> dict[str, Any]:
    return {"error": f"{type(e).__name__}: {e}"}


def _jack_part(buffers, seconds: float, blocksizes: tuple[int, ...]) -> dict[str, Any]:
    """Every blocksize on its own JACK2 dummy server: the floors, then each player in this
    process (JACK's xrun notices reach bench.device._Jack's watching client)."""
    from bench.device import _Jack

    results: dict[str, dict[str, Any]] = {}
    for blocksize in blocksizes:
        jackd = _Jack(blocksize)
        try:
            row = {JACK_ALONE: _jack_alone(jackd, buffers, min(seconds, 10.0), blocksize)}
            try:
                row[FLOOR_CLIENT] = _jack_with_c_client(jackd, min(seconds, 20.0))
            except Exception as e:  # reported as missing, the players still run
                row[FLOOR_CLIENT] = _error(e)
            for name, player in PLAYERS.items():
                started = time.monotonic()
                try:
                    row[name] = player(_Target(jackd.device, jackd.xruns), buffers, seconds,
                                       blocksize)
                except Exception as e:  # a missing peer refuses its ratio, it does not abort
                    row[name] = _error(e)
                row[name]["elapsed_s"] = round(time.monotonic() - started, 1)
        finally:
            jackd.stop()
        results[str(blocksize)] = row
    return results


# -- PipeWire: every client in a child process, glitches from pw-profiler ---------------------

def _pipewire_fixture():
    """The test suite's PipeWire fixture (tests/services/pipewire.py: start_pipewire, the
    profiler and its missed-cycle count), reused here rather than copied; and the exceptions
    its skip/fail helpers raise (pytest's outcomes: not Exceptions) when a program is missing."""
    import pytest

    from tests.services import pipewire

    return pipewire, (Exception, pytest.skip.Exception, pytest.fail.Exception)


def _pipewire_missing() -> str | None:
    """Why the PipeWire part cannot run here, or None."""
    for program, package in (("pipewire", "pipewire"), ("pw-profiler", "pipewire-bin"),
                             ("pw-link", "pipewire-bin"), ("pw-dump", "pipewire-bin")):
        if shutil.which(program) is None:
            return (f"no `{program}` binary: apt-get install --no-install-recommends "
                    f"{package} (the PipeWire part needs pipewire, pipewire-bin, pipewire-jack)")
    try:
        fixture, _ = _pipewire_fixture()
    except ImportError as e:
        return f"the PipeWire fixture (tests.services.pipewire) does not import: {e}"
    if fixture.pipewire_jack_dir() is None:
        return ("pipewire-jack's libjack.so.0 not found: apt-get install "
                "--no-install-recommends pipewire-jack")
    return None


def _pipewire_version() -> str | None:
    try:
        out = subprocess.run(["pipewire", "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return next((line.split()[-1] for line in out.splitlines() if "Linked with" in line), None)


def _nodes_of(server, pid: int) -> dict[int, dict[str, Any]]:
    """Process ``pid``'s nodes on the server: {node id: {"name", "linked"}}, ``linked`` when
    one of its ports feeds the sink (`pw-dump`: nodes belong to clients, clients carry the
    pid).  A player's audio goes through its linked node(s); streamcore's device sink also
    opens a portless JACK client to hear the server's xruns, a node of its own."""
    done = subprocess.run(["pw-dump"], env=server.client_env(), capture_output=True,
                          text=True, timeout=10)
    objects = json.loads(done.stdout or "[]")

    def props(o: dict[str, Any]) -> dict[str, Any]:
        return (o.get("info") or {}).get("props") or {}

    def of_type(kind: str) -> list[dict[str, Any]]:
        return [o for o in objects if o.get("type") == f"PipeWire:Interface:{kind}"]

    clients = {o["id"] for o in of_type("Client")
               if str(props(o).get("application.process.id")) == str(pid)}
    sinks = {o["id"] for o in of_type("Node") if props(o).get("node.name") == server.sink_name}
    feeding = {(o.get("info") or {}).get("output-node-id") for o in of_type("Link")
               if (o.get("info") or {}).get("input-node-id") in sinks}
    return {o["id"]: {"name": props(o).get("node.name"), "linked": o["id"] in feeding}
            for o in of_type("Node") if props(o).get("client.id") in clients}


def _window(profiler, fixture, seconds: float, blocksize: int):
    """The fixture's count of the profiler's first ``seconds`` of driver cycles, and how many
    cycles the whole log holds."""
    with open(profiler.log) as log:  # one line per driver cycle
        cycles = [line for line in log if line.split("\t", 1)[0].strip()]
    return fixture.count_profiler_glitches(cycles[:round(seconds * RATE / blocksize)]), \
        len(cycles)


def _profiled(profiler, fixture, nodes: dict[int, dict[str, Any]], seconds: float,
              blocksize: int) -> dict[str, Any]:
    """The profiler's figures for the window under load: its first ``seconds`` of cycles.

    The profiler starts after the clients' warm-up, and the window ends before they stop, so
    within it every cycle a node did not finish is a miss: the fixture's count splits a
    client's life into joining, steady and leaving, which here are all misses (a stream that
    stops shows unfinished cycles while it closes: those come after the window and are cut
    off, as are the cycles the profiler logs while it waits for its last data).  Glitches:
    the misses of the player's nodes linked to the sink (its audio missed the cycle); its
    other nodes' misses (streamcore's portless xrun-watch client) are reported apart."""
    linked = [n for n, info in nodes.items() if info["linked"]]
    if not linked:
        raise RuntimeError(f"none of the client's nodes feeds the sink {nodes}: its audio "
                           f"reached nothing")
    count, logged = _window(profiler, fixture, seconds, blocksize)
    absent = [n for n in linked if n not in count.followers]
    if absent:
        raise RuntimeError(f"node(s) {absent} ran in none of the {count.cycles} profiled "
                           f"cycles: {count}")

    def missed(node: int) -> int:
        f = count.followers.get(node)
        return 0 if f is None else f.joining + f.missed + f.leaving

    return {"missed_cycles": sum(missed(n) for n in linked),
            "other_nodes_missed": sum(missed(n) for n in nodes if n not in linked),
            "profiler": {"cycles": count.cycles,
                         "cycles_expected": round(seconds * RATE / blocksize),
                         "cycles_logged": logged,
                         "late_driver_cycles": count.late_driver_cycles,
                         "periods_us": {str(k): v for k, v in count.periods_us.items()},
                         "nodes": {f"{info['name']} ({n})": {
                             "linked": info["linked"], "missed": missed(n),
                             "cycles": (f.joining + f.steady + f.leaving)
                             if (f := count.followers.get(n)) else 0}
                             for n, info in nodes.items()}}}


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a child we started in its own session by its pid; unless it had ended well, also
    what it started (the load's CPU hogs, should it die inside the window), by its process
    group id."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
    if proc.poll() is None or proc.returncode != 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _await_ready(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait for the child's READY line on its stdout (read in a thread: no read blocks us);
    False after ``timeout`` or when its stdout ended first (it failed)."""
    done = threading.Event()
    seen = []

    def read() -> None:
        try:
            for line in proc.stdout:
                if line.strip() == READY:
                    seen.append(line)
                    return
        finally:
            done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait(timeout)
    return bool(seen)


def _pipewire_player(server, fixture, key: str, seconds: float, blocksize: int,
                     workdir: Path) -> dict[str, Any]:
    """One player in a child process on pipewire-jack (``python -m bench.glitch --child``):
    after its warm-up the child waits; the parent finds its nodes, starts pw-profiler, and
    says go; the child plays under bench.load for ``seconds``, closes its stream and prints
    its JSON line; the profiler's block ends after the child did, and only its first
    ``seconds`` of cycles are counted (_profiled)."""
    err_path = workdir / f"child-{key}-{blocksize}.stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.glitch", "--child", key, "--blocksize",
             str(blocksize), "--seconds", repr(seconds)],
            env=server.jack_env(), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=err, text=True, start_new_session=True)

    def failure(what: str) -> RuntimeError:
        stderr = err_path.read_text(errors="replace")[-2000:]
        return RuntimeError(f"{what} (exit status {proc.poll()}); its stderr: {stderr}")

    try:
        if not _await_ready(proc, 60):
            raise failure(f"the {key} child did not finish its warm-up")
        nodes = _nodes_of(server, proc.pid)
        with server.profiler() as profiler:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            out, _ = proc.communicate(timeout=seconds + 60)
        lines = out.strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise failure(f"the {key} child failed")
        result = json.loads(lines[-1])
    finally:
        _stop_group(proc)
    if result.get("device_name") != server.sink_name:
        raise RuntimeError(f"the child played on {result.get('device_name')!r}, not on the "
                           f"sink {server.sink_name!r}")
    seen = _profiled(profiler, fixture, nodes, seconds, blocksize)
    # No JACK xrun notice reaches a client under PipeWire: the child's list stayed empty.
    result.pop("jack_xruns", None)
    result["glitches_seen_by_client"] = result.pop("glitches")
    result["glitches"] = _glitches(result.get("output_underflows", 0), seen["missed_cycles"],
                                   result.get("ring_underruns", 0))
    return {**result, **seen}


def _pipewire_with_c_client(server, fixture, seconds: float, blocksize: int) -> dict[str, Any]:
    """jack_metro (JACK's example client, on pipewire-jack's libjack) linked to the sink's
    playback ports, under the same load (here in the bench process, like the JACK2 part's):
    the floor for any client.  The load starts before the profiler, so every profiled cycle
    is under it."""
    exe = shutil.which("jack_metro")
    if exe is None:
        raise RuntimeError("jack_metro not found (it comes with jackd2)")
    name = f"bench-metro-{os.getpid()}"
    proc = subprocess.Popen([exe, "-n", name, "-b", "120"], env=server.jack_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        (port,) = fixture.wait_for_ports(1, f"{name}:", timeout=10, env=server.client_env())
        for playback in server.sink_ports("playback"):
            server.link(port, playback)
        time.sleep(WARMUP)
        nodes = _nodes_of(server, proc.pid)
        with Load(enabled=True) as load, server.profiler() as profiler:
            time.sleep(seconds)
    finally:
        _stop_group(proc)
    seen = _profiled(profiler, fixture, nodes, seconds, blocksize)
    return {"glitches": seen["missed_cycles"], "seconds": seconds, **seen, **load.facts}


def _pipewire_alone(server, fixture, seconds: float, blocksize: int) -> dict[str, Any]:
    """No client: the profiler's late driver cycles under the load.  PipeWire's null sink
    drives no cycle while no node follows it, so this usually logs no cycle at all: then
    there is no server-alone floor, only jack_metro's."""
    with Load(enabled=True) as load, server.profiler() as profiler:
        time.sleep(seconds)
    count, _ = _window(profiler, fixture, seconds, blocksize)
    return {"glitches": count.late_driver_cycles if count.cycles else None,
            "late_driver_cycles": count.late_driver_cycles, "cycles": count.cycles,
            "seconds": seconds, **load.facts}


def _pipewire_row(server, fixture, failures: tuple[type[BaseException], ...], seconds: float,
                  blocksize: int, workdir: Path) -> dict[str, dict[str, Any]]:
    """The floors and the players on one running server; a part that fails is reported with
    its reason, the others still run."""
    row: dict[str, dict[str, Any]] = {}
    try:
        row[PW_ALONE] = _pipewire_alone(server, fixture, min(seconds, 10.0), blocksize)
    except failures as e:
        row[PW_ALONE] = _error(e)
    try:
        row[PW_FLOOR_CLIENT] = _pipewire_with_c_client(server, fixture, min(seconds, 20.0),
                                                       blocksize)
    except failures as e:
        row[PW_FLOOR_CLIENT] = _error(e)
    for key, name in CHILD_NAMES.items():
        started = time.monotonic()
        try:
            row[name] = _pipewire_player(server, fixture, key, seconds, blocksize, workdir)
        except failures as e:
            row[name] = _error(e)
        row[name]["elapsed_s"] = round(time.monotonic() - started, 1)
    return row


def _pipewire_part(seconds: float, blocksizes: tuple[int, ...]) -> dict[str, Any]:
    """Every blocksize on its own headless PipeWire (quantum = blocksize, started by the test
    fixture), the same floors and players; {"missing": why} when PipeWire is not there."""
    missing = _pipewire_missing()
    if missing:
        return {"missing": missing, "results": {}}
    fixture, failures = _pipewire_fixture()
    results: dict[str, dict[str, Any]] = {}
    for blocksize in blocksizes:
        with tempfile.TemporaryDirectory(prefix="streamcore-bench-pw-") as tmp:
            try:
                server = fixture.start_pipewire(Path(tmp) / "pw", quantum=blocksize)
            except failures as e:  # this blocksize is reported as missing, the others run
                results[str(blocksize)] = {name: _error(e) for name in
                                           (PW_ALONE, PW_FLOOR_CLIENT, *PLAYERS)}
                continue
            try:
                results[str(blocksize)] = _pipewire_row(server, fixture, failures, seconds,
                                                        blocksize, Path(tmp))
            finally:
                server.stop()
    return {"missing": None, "version": _pipewire_version(), "results": results}


# -- the report -------------------------------------------------------------------------------

def _figures(report: Report, server: str, row: dict[str, dict[str, Any]], blocksize: int,
             seconds: float) -> None:
    """The rows of one server and blocksize, each named after the server; every ratio is
    against a reference measured on that server in this run."""
    jack = server == "JACK2"
    alone_key, floor_key = (JACK_ALONE, FLOOR_CLIENT) if jack else (PW_ALONE, PW_FLOOR_CLIENT)
    ours, alone, floor = row["streamcore"], row[alone_key], row[floor_key]
    where = f"blocksize {blocksize}, {seconds:g} s under load"
    expected = seconds * RATE / blocksize
    how = (f"max(underflows, JACK xruns) + ring underruns; periods expected {expected:.0f}, "
           f"callbacks ran {ours.get('callbacks')}" if jack else
           f"max(underflows, missed cycles of its node(s) linked to the sink in pw-profiler) + "
           f"ring underruns (PortAudio's flags and JACK's xrun notices stay 0 under PipeWire); "
           f"cycles expected {expected:.0f}, profiled "
           f"{ours.get('profiler', {}).get('cycles')}, streamcore's portless xrun-watch node "
           f"missed {ours.get('other_nodes_missed')}")
    for name in list(PLAYERS)[1:]:
        ref = row[name]
        report.add(f"{server}: glitches, {where} (vs {name.split(' ')[0]})",
                   ours.get("glitches"), "glitches", reference=(name, ref.get("glitches")),
                   reference_error=ref.get("error"), higher_is_better=False, goal=GOAL,
                   note=ours.get("error") or how)
    report.add(f"{server}: glitches against a minimal C client (jack_metro), {where}",
               ours.get("glitches"), "glitches", reference=(floor_key, floor.get("glitches")),
               reference_error=floor.get("error"), higher_is_better=False, goal=GOAL,
               note=ours.get("error") or (
                   f"jack_metro played {floor.get('seconds', 0):g} s under the same load"))
    alone_s = min(seconds, 10.0)
    if jack:
        report.add(f"{server}: JACK's own xruns with no client playing, blocksize {blocksize}, "
                   f"{alone_s:g} s under load", alone.get("glitches"), "xruns",
                   higher_is_better=False, note=alone.get("error") or (
                       f"the noise floor: what the server and the load cause alone, in "
                       f"{alone_s:g} s"))
        report.add(f"{server}: JACK's xruns with one minimal C client (jack_metro) playing, "
                   f"blocksize {blocksize}, {min(seconds, 20.0):g} s under load",
                   floor.get("glitches"), "xruns", higher_is_better=False,
                   note=floor.get("error") or (
                       f"the floor for any client (JACK's own example client), in "
                       f"{floor['seconds']:g} s"))
    else:
        report.add(f"{server}: late driver cycles with no client (pw-profiler), blocksize "
                   f"{blocksize}, {alone_s:g} s under load", alone.get("glitches"),
                   "late driver cycles", higher_is_better=False, note=alone.get("error") or (
                       f"{alone['cycles']} cycles profiled" if alone["cycles"] else
                       "no cycle ran: the null sink drives none while no node follows it, "
                       "so there is no server-alone floor (the C client's row is the floor)"))
        report.add(f"{server}: missed cycles of one minimal C client (jack_metro through "
                   f"pipewire-jack), blocksize {blocksize}, {min(seconds, 20.0):g} s under load",
                   floor.get("glitches"), "missed cycles", higher_is_better=False,
                   note=floor.get("error") or (
                       f"the floor for any client (JACK's example client), in "
                       f"{floor['seconds']:g} s; {floor['profiler']['cycles']} cycles profiled, "
                       f"{floor['profiler']['late_driver_cycles']} late driver cycles"))
    sd_row = row[list(PLAYERS)[1]]
    report.add(f"{server}: audio-thread page faults, {where}", ours.get("faults_minor"),
               "faults", reference=("python-sounddevice callback thread",
                                    sd_row.get("faults_minor")),
               reference_error=sd_row.get("error"), higher_is_better=False,
               note=ours.get("error") or ours.get("fault_threads"))


def _pipewire_figures(report: Report, pipewire: dict[str, Any], seconds: float) -> None:
    """PipeWire's rows, or one row saying why the part is missing."""
    if pipewire["missing"]:
        report.add("PipeWire: glitches (not measured)", None, "glitches",
                   higher_is_better=False, goal=GOAL,
                   note=f"the PipeWire part is missing: {pipewire['missing']}")
    for blocksize, row in pipewire["results"].items():
        _figures(report, "PipeWire", row, int(blocksize), seconds)


def run(quick: bool = False, smoke: bool = False) -> Report:
    """On each server, 60 s per player and blocksize (quick 4 s; smoke 1 s, blocksize 256
    only), up to 10 s with no client playing (the noise floor) and up to 20 s with only
    jack_metro playing (the floor for any client).  JACK2 first, then PipeWire."""
    seconds = 1.0 if smoke else 4.0 if quick else 60.0
    blocksizes = (256,) if smoke else BLOCKSIZES
    report = Report("glitch", quick or smoke)
    results = _jack_part(_buffers(seconds), seconds, blocksizes)
    for blocksize in blocksizes:
        _figures(report, "JACK2", results[str(blocksize)], blocksize, seconds)
    pipewire = _pipewire_part(seconds, blocksizes)
    _pipewire_figures(report, pipewire, seconds)
    grants = sorted({r["streamcore"].get("grant", "?")
                     for part in (results, pipewire["results"]) for r in part.values()})
    # "results" stays JACK2's (its keys as before); PipeWire's rows are under "pipewire".
    report.extra = {"seconds": seconds, "samplerate": RATE, "voices": VOICES,
                    "memory_after": process_memory(), "servers": ["JACK2", "PipeWire"],
                    "results": results, "pipewire": pipewire, "grant": grants}
    report.machine["realtime"] = grants  # how the mixer got (or missed) realtime
    return report


def _child(argv: list[str]) -> int:
    """``python -m bench.glitch --child NAME --blocksize B --seconds S``: one player on the
    JACK host API's output device of this process's libjack (pipewire-jack, with the server's
    jack_env()), under bench.load; prints READY after the warm-up, waits for "go" on stdin,
    and prints one JSON line when done."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.glitch --child",
                                     description="one player, for the PipeWire part")
    parser.add_argument("--child", required=True, choices=sorted(CHILD_NAMES))
    parser.add_argument("--blocksize", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    import sounddevice as sd

    devices = [i for i, d in enumerate(sd.query_devices())
               if "JACK" in sd.query_hostapis(d["hostapi"])["name"]
               and d["max_output_channels"] > 0]
    if not devices:
        print("no JACK output device: is LD_LIBRARY_PATH pipewire-jack's and the server up?",
              file=sys.stderr)
        return 1

    def ready() -> None:
        print(READY, flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("the parent went away before the window under load")

    name = CHILD_NAMES[args.child]
    result = PLAYERS[name](_Target(devices[0], [], ready), _buffers(args.seconds),
                           args.seconds, args.blocksize)
    result["device_name"] = sd.query_devices(devices[0])["name"]
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--child" in args:
        return _child(args)
    return bench_main("glitch", run, __doc__.splitlines()[0], args)


if __name__ == "__main__":
    raise SystemExit(main())
