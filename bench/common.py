"""What every benchmark shares: machine facts, a robust timer, writing the JSON result."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """Facts that make a figure comparable: CPU, cores, kernel, load when the run started."""
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                          if line.startswith("model name")), "")
    except OSError:
        pass
    import numpy

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "loadavg": os.getloadavg(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def median_of(repeats: int, measure: Callable[[], float]) -> float:
    """The median of `repeats` runs of a measurement (noisy shared machines)."""
    return statistics.median(measure() for _ in range(repeats))


def write_json(result: dict[str, Any], out: str | os.PathLike[str] | None,
               name: str) -> pathlib.Path:
    """Write `result` to `out`, or to bench/results/NAME.json; returns the path."""
    path = pathlib.Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
