"""What every benchmark shares: machine facts, figures with their references, JSON and Markdown.

A figure is only ever reported against a reference measured in the same run, on the same
machine; when the reference could not run, the ratio is refused with the reason instead of
being computed against nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import resource
import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """The facts that make a figure comparable: CPU, cores, kernel, governor, SMT, load."""
    model = None
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        "host": socket.gethostname(),
        "cpu_model": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "governor": governor or "unknown (no cpufreq in /sys: a VM or container)",
        "smt": _read("/sys/devices/system/cpu/smt/active"),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
    }


def median_of(repeats: int, measure: Callable[[], float]) -> float:
    """The median of ``repeats`` runs of a measurement (these machines are shared and noisy)."""
    return statistics.median(measure() for _ in range(repeats))


@dataclass
class Figure:
    """One measured value and, when it ran, its same-run reference."""

    name: str
    value: float | None
    unit: str
    reference_name: str | None = None
    reference_value: float | None = None
    higher_is_better: bool = True
    goal: str | None = None
    note: str | None = None
    refused: str | None = None  # why no ratio is reported

    @property
    def ratio(self) -> float | None:
        if self.refused or self.value is None or not self.reference_value:
            return None
        return self.value / self.reference_value


@dataclass
class Report:
    """The figures of one benchmark module, with the machine they were measured on."""

    bench: str
    quick: bool
    figures: list[Figure] = field(default_factory=list)
    started: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat())
    machine: dict[str, Any] = field(default_factory=machine)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float | None, unit: str, *,
            reference: tuple[str, float | None] | None = None, reference_error: str | None = None,
            higher_is_better: bool = True, goal: str | None = None,
            note: str | None = None) -> Figure:
        """Record a figure; ``reference`` is (name, value) measured in this run, and
        ``reference_error`` says why it could not be, which refuses the ratio."""
        ref_name, ref_value = reference if reference else (None, None)
        refused = reference_error
        if reference is not None and ref_value is None and refused is None:
            refused = f"the reference {ref_name} gave no value"
        figure = Figure(name, value, unit, ref_name, ref_value, higher_is_better, goal, note,
                        refused)
        self.figures.append(figure)
        return figure

    def as_dict(self) -> dict[str, Any]:
        figures = []
        for f in self.figures:
            d = asdict(f)
            d["ratio"] = f.ratio
            figures.append(d)
        return {"bench": self.bench, "quick": self.quick, "started": self.started,
                "machine": self.machine, "figures": figures, "extra": self.extra}

    def write_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
        return path


def markdown_table(reports: list[dict[str, Any]]) -> str:
    """A table of every figure with its reference and ratio (bench/results/latest.md)."""
    lines = ["| bench | figure | value | reference | ratio | goal |",
             "| --- | --- | --- | --- | --- | --- |"]
    for report in reports:
        for f in report["figures"]:
            value = "n/a" if f["value"] is None else f"{f['value']:.4g} {f['unit']}"
            if f["reference_name"] is None:
                ref = "—"
            elif f["reference_value"] is None:
                ref = f"{f['reference_name']}: n/a"
            else:
                ref = f"{f['reference_name']}: {f['reference_value']:.4g} {f['unit']}"
            ratio = f"refused: {f['refused']}" if f["refused"] else (
                "—" if f["ratio"] is None else f"{f['ratio']:.3g}x")
            lines.append(f"| {report['bench']} | {f['name']} | {value} | {ref} | {ratio} | "
                         f"{f['goal'] or ''} |")
    return "\n".join(lines) + "\n"


class CpuClock:
    """Wall time and this process's CPU time (all threads) over a block."""

    def __enter__(self) -> CpuClock:
        self._wall = time.perf_counter()
        self._cpu = self._cpu_now()
        return self

    @staticmethod
    def _cpu_now() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = self._cpu_now() - self._cpu


def bench_main(name: str, run: Callable[[bool, bool], Report], description: str,
               argv: list[str] | None = None) -> int:
    """The command line every benchmark module shares: ``python -m bench.NAME [--quick]
    [--smoke] [--out FILE]`` runs it, writes its JSON and prints each figure with its ratio."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--quick", action="store_true", help="shorter runs (minutes)")
    parser.add_argument("--smoke", action="store_true", help="tiny runs (seconds)")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{name}.json")
    args = parser.parse_args(argv)
    report = run(args.quick, args.smoke)
    print(f"wrote {report.write_json(args.out)}")
    for f in report.figures:
        value = "n/a" if f.value is None else f"{f.value:.4g} {f.unit}"
        if f.refused:
            against = f"no ratio: {f.refused}"
        elif f.ratio is not None:
            against = f"{f.ratio:.3g}x {f.reference_name}"
        elif f.reference_name is not None and f.reference_value is not None:
            # measured, but 0: no ratio, and "no reference" would say it was not measured
            against = f"{f.reference_name}: {f.reference_value:.4g} {f.unit}, no ratio"
        else:
            against = "no reference"
        print(f"  {f.name}: {value} ({against})")
    return 0
