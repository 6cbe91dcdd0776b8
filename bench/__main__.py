"""Run every benchmark and write bench/results/<date>-<host>.json and latest.md.

    python -m bench [--quick] [--smoke] [--only NAME ...] [--out-dir DIR]

--quick finishes in minutes; --smoke in seconds (the test suite uses it to prove the harness
and the JSON's fields, not to measure anything).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import socket
import sys
import time
import traceback
from pathlib import Path

from bench.harness import RESULTS, machine, markdown_table
from bench.plots import write_plots


def realtime_probe() -> str:
    """How this process gets realtime (an engine's mixer grant), for the machine facts."""
    try:
        from streamcore import Engine

        with Engine(sink="null", watchdog=False) as engine:
            return str(engine.grant)
    except Exception as e:
        return f"probe failed: {type(e).__name__}: {e}"


BENCHMARKS = ["ring", "pipe", "wakeup", "glitch", "mixing", "memory", "duplex"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (minutes)")
    parser.add_argument("--smoke", action="store_true", help="tiny runs (seconds), for tests")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only these ({', '.join(BENCHMARKS)})")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    reports, failures = [], {}
    for name in args.only or BENCHMARKS:
        print(f"bench {name} ...", file=sys.stderr)
        module = importlib.import_module(f"bench.{name}")
        started = time.monotonic()
        try:
            reports.append(module.run(quick=args.quick, smoke=args.smoke).as_dict())
            reports[-1]["elapsed_s"] = round(time.monotonic() - started, 1)
        except Exception:  # one broken benchmark must not hide the others' figures
            failures[name] = traceback.format_exc()
            print(failures[name], file=sys.stderr)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{stamp}-{socket.gethostname()}.json"
    facts = {**machine(), "realtime": realtime_probe()}
    results = {"machine": facts, "quick": args.quick, "smoke": args.smoke,
               "reports": reports, "failures": failures}
    results["plots"] = write_plots(results, args.out_dir, out.stem)
    out.write_text(json.dumps(results, indent=2) + "\n")
    plots = "".join(f"- {name}: {Path(p).name if p.endswith('.png') else p}\n"
                    for name, p in results["plots"].items())
    (args.out_dir / "latest.md").write_text(
        f"# Benchmarks, {stamp}\n\nMachine: {json.dumps(facts)}\n\n"
        + markdown_table(reports)
        + (f"\nPlots:\n{plots}" if plots else "")
        + "".join(f"\n**{n} failed**:\n```\n{t}```\n" for n, t in failures.items()))
    print(f"wrote {out} and {args.out_dir / 'latest.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
