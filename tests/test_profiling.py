"""Profiling output: Chrome trace-event JSON, the stats PNG and the `top` screen."""

from __future__ import annotations

import io
import json
import pathlib
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

from streamcore import Engine
from streamcore.profiling import (
    TraceRecorder,
    chrome_trace,
    plot_stats,
    top,
    top_lines,
    write_chrome_trace,
)
from streamcore.telemetry import TRACE_DEMOTED, TRACE_DTYPE, TRACE_XRUN
from streamcore.watchdog import Watchdog

ROOT = pathlib.Path(__file__).resolve().parent.parent
PHASES = {"X", "C", "i", "M"}


def check_trace_events(data: dict) -> list[dict]:
    """What chrome://tracing and Perfetto need of the JSON Object Format; returns the events."""
    assert isinstance(data, dict) and isinstance(data["traceEvents"], list)
    for ev in data["traceEvents"]:
        assert isinstance(ev["name"], str) and ev["ph"] in PHASES, ev
        assert isinstance(ev["pid"], int), ev
        if ev["ph"] == "M":
            assert ev["name"] in ("process_name", "thread_name") and ev["args"]["name"]
            continue
        assert isinstance(ev["ts"], int | float), ev
        if ev["ph"] == "X":
            assert isinstance(ev["tid"], int) and ev["dur"] >= 0, ev
        if ev["ph"] == "C":
            assert ev["args"] and all(isinstance(v, int | float) for v in ev["args"].values())
        if ev["ph"] == "i":
            assert ev["s"] in ("g", "p", "t"), ev
    return data["traceEvents"]


def png_size(path: pathlib.Path) -> tuple[int, int]:
    """Width and height of a PNG, after checking its signature and every chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, kinds = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        kinds.append(kind)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    ihdr = data[16:24]
    return struct.unpack(">II", ihdr)


def synthetic_records() -> np.ndarray:
    records = np.zeros(5, dtype=TRACE_DTYPE)
    records["cycle"] = np.arange(1, 6)
    records["wake_ns"] = 10_000_000 + np.arange(5) * 1_000_000
    records["late_ns"] = [20_000, 30_000, 900_000, 25_000, 21_000]
    records["mix_ns"] = [5_000, 6_000, 7_000, 5_500, 5_000]
    records["fill"] = [96, 96, 0, 96, 96]
    records["voices"] = 3
    records["rendered"] = 1
    records["flags"] = [0, 0, TRACE_XRUN, TRACE_DEMOTED, TRACE_DEMOTED]
    return records


class TestChromeTraceOnData:
    """chrome_trace() maps each record and event to the documented trace events."""

    def test_each_cycle_is_a_slice_two_counters_and_flags_are_instants(self):
        data = json.loads(json.dumps(chrome_trace(synthetic_records(), mixer_tid=77)))
        events = check_trace_events(data)
        slices = [e for e in events if e["name"] == "mix cycle"]
        assert [s["args"]["cycle"] for s in slices] == [1, 2, 3, 4, 5]
        assert slices[0]["ts"] == 0 and slices[1]["ts"] == 1000.0  # µs from the first wake
        assert slices[2]["dur"] == 7.0 and slices[2]["tid"] == 77
        latency = [e["args"]["µs"] for e in events if e["name"] == "wake latency"]
        assert latency == [20.0, 30.0, 900.0, 25.0, 21.0]
        assert [e["args"]["frames"] for e in events if e["name"] == "fill"] == [96, 96, 0, 96, 96]
        (xrun,) = [e for e in events if e["name"] == "xrun"]
        assert xrun["ts"] == 2000.0 and xrun["ph"] == "i"
        (demoted,) = [e for e in events if e["name"] == "mixer demoted"]  # once per run
        assert demoted["args"]["cycle"] == 4

    def test_wrong_dtype_is_refused(self):
        with pytest.raises(TypeError, match="TRACE_DTYPE"):
            chrome_trace(np.zeros(3))


class TestTraceFromARunningEngine:
    """A real engine's trace, with a watchdog demotion, loads as trace-event JSON."""

    def test_trace_json_has_cycles_counters_and_the_watchdog_instant(self, tmp_path):
        with Engine(blocksize=128, watchdog=Watchdog(cooldown=0)) as engine:
            recorder = TraceRecorder(engine)
            time.sleep(0.2)
            recorder.poll()
            engine._test_spin(0.05)  # one 50 ms cycle: past the hard limit of 4 periods
            deadline = time.monotonic() + 5
            while not engine.events() and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
            records = recorder.run(0.1, every=0.05)
            events = engine.events()
            path = write_chrome_trace(tmp_path / "trace.json", records, events,
                                      origin_ns=engine.stats().start_ns,
                                      mixer_tid=engine.mixer_tid)
        assert [e.reason for e in events] == ["hard_limit"]
        assert recorder.missed == 0
        assert np.all(np.diff(records["cycle"].astype(np.int64)) == 1)
        trace = check_trace_events(json.loads(path.read_text()))
        names = {e["name"] for e in trace}
        assert {"mix cycle", "wake latency", "fill", "watchdog", "mixer demoted"} <= names
        assert sum(e["name"] == "mix cycle" for e in trace) == len(records)
        (wd,) = [e for e in trace if e["name"] == "watchdog"]
        assert wd["args"]["reason"] == "hard_limit"
        assert ("xrun" in names) == bool(np.any(records["flags"] & TRACE_XRUN))

    def test_cli_trace_writes_the_file(self, tmp_path):
        out = tmp_path / "cli-trace.json"
        done = subprocess.run([sys.executable, "-m", "streamcore", "trace", "--seconds", "0.5",
                               "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        trace = check_trace_events(json.loads(out.read_text()))
        cycles = [e for e in trace if e["name"] == "mix cycle"]
        assert len(cycles) > 50  # 0.5 s of 2.67 ms periods is ~187
        assert all(c["args"]["voices"] == 3 for c in cycles[10:])


class TestPlots:
    """plot_stats() writes a valid PNG from an engine or from stats plus a trace."""

    def test_png_from_a_running_engine(self, tmp_path):
        pytest.importorskip("matplotlib")
        with Engine(blocksize=64) as engine:
            time.sleep(0.3)
            path = plot_stats(engine, tmp_path / "stats.png")
        assert png_size(path) == (800, 900)

    def test_cli_stats_plot(self, tmp_path):
        pytest.importorskip("matplotlib")
        out = tmp_path / "cli.png"
        done = subprocess.run([sys.executable, "-m", "streamcore", "stats", "--seconds", "0.3",
                               "--plot", str(out)], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert "latency" in done.stdout
        assert png_size(out) == (800, 900)


class TestTop:
    """The top screen shows the figures of the engine it watches."""

    def test_lines_on_a_stopped_engine_are_exact(self):
        with Engine(blocksize=64) as engine:
            time.sleep(0.2)
            engine.stop()
            stats = engine.stats()
            lines = top_lines(stats, engine.grant, period_ns=engine.period_ns)
        text = "\n".join(lines)
        assert f"cycles {stats.cycles}" in text and f"xruns    {stats.xruns}" in text
        assert "stopped" in lines[0]
        assert (engine.grant.method in text) and "taints" in text

    def test_refreshes_until_its_time_is_up(self):
        out = io.StringIO()  # not a tty: each screen is appended
        with Engine(blocksize=64) as engine:
            last = top(engine, seconds=0.3, interval=0.1, out=out)
        screens = out.getvalue().count("streamcore top")
        assert screens >= 3 and last.cycles > 0
