"""The benchmark harness runs (in --smoke form: seconds) and writes every field.

No timing is asserted here: speed is only ever a ratio in bench/results, never a test."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from bench.__main__ import BENCHMARKS

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIGURE_FIELDS = {"name", "value", "unit", "reference_name", "reference_value", "ratio",
                 "higher_is_better", "goal", "note", "refused"}


def test_smoke_run_writes_json_and_markdown(tmp_path):
    """`python -m bench --smoke` writes a results JSON with machine facts and complete
    figures, and a latest.md table."""
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--smoke", "--out-dir",
                           str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (result,) = tmp_path.glob("*.json")
    data = json.loads(result.read_text())
    assert data["failures"] == {}
    assert {"cpu_model", "cores", "kernel", "governor"} <= set(data["machine"])
    assert data["reports"], "no benchmark reported"
    for report in data["reports"]:
        assert report["figures"]
        for figure in report["figures"]:
            assert set(figure) == FIGURE_FIELDS
            assert figure["value"] is not None or figure["note"]
    assert "| bench | figure |" in (tmp_path / "latest.md").read_text()
    assert {r["bench"] for r in data["reports"]} == set(BENCHMARKS)
    assert data["machine"]["realtime"]
    for report in data["reports"]:
        if report["bench"] in ("wakeup", "glitch", "mixing", "memory"):
            assert report["machine"]["realtime"], f"{report['bench']} lacks its grant"
    (glitch,) = [r for r in data["reports"] if r["bench"] == "glitch"]
    # both servers: JACK2's rows under "results" (as before), PipeWire's under "pipewire",
    # measured or missing with the reason (a machine without PipeWire still runs the bench)
    assert glitch["extra"]["results"], glitch["extra"]
    pipewire = glitch["extra"]["pipewire"]
    assert pipewire["results"] or pipewire["missing"], pipewire
    assert any(f["name"].startswith("JACK2: ") for f in glitch["figures"])
    assert any(f["name"].startswith("PipeWire: ") for f in glitch["figures"])
    assert set(data["plots"]) == {"wakeup", "glitch", "mixing"}
    for path in data["plots"].values():
        assert pathlib.Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_p99_ratio_interval_follows_the_turns():
    """The wakeup bench's bootstrap interval of the p99 ratio: around 1 for the same
    distribution, around 2 when every latency doubles, none with fewer than 3 turns."""
    import numpy as np

    from bench.wakeup import HIST_US, p99_ratio_interval

    rng = np.random.default_rng(0)

    def turns(scale: float) -> list[dict]:
        out = []
        for _ in range(12):
            latencies = rng.exponential(20.0, 2000)
            bins = np.clip((latencies * scale).astype(int), 0, HIST_US - 1)
            out.append({"counts": np.bincount(bins, minlength=HIST_US), "overflows": 0,
                        "max": float(bins.max())})
        return out

    same = p99_ratio_interval(turns(1.0), turns(1.0))
    double = p99_ratio_interval(turns(2.0), turns(1.0))
    assert same is not None and double is not None
    assert same[0] <= 1.0 <= same[1] and same[1] < 1.3
    assert 1.6 < double[0] <= double[1] < 2.5
    assert p99_ratio_interval(turns(1.0)[:2], turns(1.0)) is None


def test_glitch_reports_pipewire_missing_with_the_reason(monkeypatch):
    """Without a `pipewire` binary the glitch bench's PipeWire part is a row that says why,
    not a crash; the JACK2 part is untouched by it."""
    from bench import glitch
    from bench.harness import Report

    monkeypatch.setattr(glitch.shutil, "which", lambda name, *a, **k: None)
    reason = glitch._pipewire_missing()
    assert reason is not None and "`pipewire`" in reason
    part = glitch._pipewire_part(1.0, (256,))
    assert part == {"missing": reason, "results": {}}
    report = Report("glitch", True)
    glitch._pipewire_figures(report, part, 1.0)
    (figure,) = report.figures
    assert figure.name.startswith("PipeWire: ") and figure.value is None
    assert reason in figure.note


def test_glitch_rows_of_a_server_that_failed_carry_the_reason():
    """A server that did not start gives every row of its blocksize a value of None and the
    error as the note (the ratios are refused), for either server."""
    from bench import glitch
    from bench.harness import Report

    for server, names in (("JACK2", (glitch.JACK_ALONE, glitch.FLOOR_CLIENT)),
                          ("PipeWire", (glitch.PW_ALONE, glitch.PW_FLOOR_CLIENT))):
        row = {name: {"error": "RuntimeError: no server"} for name in (*names, *glitch.PLAYERS)}
        report = Report("glitch", True)
        glitch._figures(report, server, row, 256, 1.0)
        assert report.figures
        for figure in report.figures:
            assert figure.name.startswith(f"{server}: ")
            assert figure.value is None and figure.ratio is None
            assert "no server" in figure.note
