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
    assert set(data["plots"]) == {"wakeup", "glitch", "mixing"}
    for path in data["plots"].values():
        assert pathlib.Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
