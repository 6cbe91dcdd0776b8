"""PNG plots of a bench run, drawn from the results JSON (matplotlib: the ``plot`` extra).

    python -m bench.plots RESULTS.json [--out-dir DIR]

- ``<stem>-wakeup.png``: wake latency histograms, streamcore against cyclictest, per case;
- ``<stem>-glitch.png``: glitches per player and blocksize, one panel per server (JACK2,
  PipeWire);
- ``<stem>-mixing.png``: p99 cycle time against voices, streamcore's mixer and numpy, with the
  half-period budget.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _wakeup(plt, report: dict[str, Any]) -> Any:
    cases = report["extra"]["cases"]
    fig, axes = plt.subplots(len(cases), 1, figsize=(8, 2.6 * len(cases)), squeeze=False,
                             constrained_layout=True)
    for ax, (case, data) in zip(axes[:, 0], cases.items(), strict=True):
        for who, style in (("cyclictest", "C1"), ("streamcore", "C0")):
            hist = data[who].get("histogram")
            if hist and hist["us"]:
                # points, not steps: the histogram is sparse (1 µs bins, empty ones left out)
                ax.plot(hist["us"], hist["count"], ".", markersize=4, color=style,
                        label=f"{who}: p99 {data[who]['p99']:.0f} µs, max {data[who]['max']:.0f}")
        ax.set_yscale("log")
        ax.set_xscale("symlog", linthresh=100)
        ax.set_xlim(left=0)
        ax.set_title(f"wake latency, {case}", fontsize=9)
        ax.set_xlabel("µs")
        ax.set_ylabel("cycles")
        ax.legend(fontsize=8)
    return fig


def _glitch(plt, report: dict[str, Any]) -> Any:
    extra = report["extra"]
    # "results" is JACK2's (the key of runs before PipeWire was measured too)
    panels = [("JACK2", extra["results"], "max(underflows, JACK xruns) + ring underruns")]
    pipewire = extra.get("pipewire") or {}
    if pipewire.get("results"):
        panels.append(("PipeWire", pipewire["results"],
                       "missed cycles (pw-profiler) + ring underruns"))
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 4 * len(panels)), squeeze=False,
                             constrained_layout=True)
    for ax, (server, results, counted) in zip(axes[:, 0], panels, strict=True):
        players = list(next(iter(results.values())))
        width = 0.8 / len(players)
        for i, player in enumerate(players):
            xs, ys = [], []
            for j, (_block, row) in enumerate(results.items()):
                xs.append(j + i * width)
                ys.append(row.get(player, {}).get("glitches") or 0)
            ax.bar(xs, ys, width, label=player)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(results))],
                      [f"blocksize {b}" for b in results])
        ax.set_ylabel(f"glitches ({counted})", fontsize=8)
        ax.set_title(f"{server}: {extra['seconds']:g} s per run under load", fontsize=9)
        ax.legend(fontsize=8)
    if pipewire.get("missing"):
        fig.suptitle(f"PipeWire not measured: {pipewire['missing']}", fontsize=8)
    return fig


def _mixing(plt, report: dict[str, Any]) -> Any:
    extra = report["extra"]
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    for key, label in (("streamcore_runs", "streamcore mixer"), ("numpy_runs", "numpy callback")):
        runs = sorted(extra[key], key=lambda r: r["voices"])
        ax.plot([r["voices"] for r in runs], [r["p99_ns"] / 1e3 for r in runs], "o-", label=label)
    ax.axhline(extra["budget_ns"] / 1e3, color="red", linestyle="--", label="50% of the period")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("stereo voices")
    ax.set_ylabel("p99 cycle time, µs")
    ax.legend(fontsize=8)
    return fig


PLOTS = {"wakeup": _wakeup, "glitch": _glitch, "mixing": _mixing}


def write_plots(results: dict[str, Any], out_dir: Path, stem: str) -> dict[str, str]:
    """One PNG per benchmark that has a plot; returns {bench: path or 'skipped: why'}."""
    try:
        plt = _pyplot()
    except ImportError:
        return {name: "skipped: matplotlib is not installed (pip install 'streamcore[plot]')"
                for name in PLOTS}
    written = {}
    for report in results["reports"]:
        draw = PLOTS.get(report["bench"])
        if draw is None:
            continue
        path = out_dir / f"{stem}-{report['bench']}.png"
        try:
            fig = draw(plt, report)
            fig.savefig(path, dpi=90)
            plt.close(fig)
            written[report["bench"]] = str(path)
        except Exception as e:  # a plot must not lose the figures: say why it is missing
            written[report["bench"]] = f"skipped: {type(e).__name__}: {e}"
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    for name, path in write_plots(results, args.out_dir or args.results.parent,
                                  args.results.stem).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
