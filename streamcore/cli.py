"""The `streamcore` command (also `python -m streamcore`).

Exit status: 0 success, 1 a runtime failure, 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys

from streamcore.doctor import run as _doctor
from streamcore.system import format_report, system_report

__all__ = ["main"]


def _info(args: argparse.Namespace) -> int:
    report = system_report(bus_timeout=args.bus_timeout)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_report(report))
    return 0


def _demo(args: argparse.Namespace) -> int:
    # Until the engine exists, the demo is the system report: what streamcore finds here.
    print(format_report(system_report(bus_timeout=args.bus_timeout)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamcore", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--bus-timeout", type=float, default=1.0, metavar="SECONDS",
                        help="how long to wait for the system bus and rtkit (default 1)")
    parser.set_defaults(run=_info)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    info = sub.add_parser("info", help="what this machine offers (the default)")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(run=_info)
    demo = sub.add_parser("demo", help="the main demo (what `make demo` runs)")
    demo.set_defaults(run=_demo)
    doctor = sub.add_parser("doctor", help="check this machine and user for realtime audio")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument("--bus-timeout", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                        help="bound for each bus step (default 1)")
    doctor.set_defaults(run=_doctor)

    # profiling commands (issue 8): handlers in streamcore/profiling.py
    from streamcore import profiling as _profiling

    trace = sub.add_parser("trace", help="record per-period events as Chrome trace-event JSON")
    trace.add_argument("--seconds", type=float, default=5.0, help="how long (default 5)")
    trace.add_argument("--out", default="trace.json", help="output file (default trace.json)")
    _profiling.add_engine_arguments(trace)
    trace.set_defaults(run=_profiling.trace_command)
    top = sub.add_parser("top", help="a live view of a running engine's figures")
    top.add_argument("--seconds", type=float, default=None, help="stop after this long "
                     "(default: until Ctrl-C)")
    top.add_argument("--interval", type=float, default=0.25, help="refresh period, s")
    _profiling.add_engine_arguments(top)
    top.set_defaults(run=_profiling.top_command)
    stats = sub.add_parser("stats", help="run an engine and print (or --plot) its figures")
    stats.add_argument("--seconds", type=float, default=3.0, help="how long (default 3)")
    stats.add_argument("--plot", metavar="PNG", default=None,
                       help="also draw the histograms and fill level (needs matplotlib)")
    stats.add_argument("--json", action="store_true", help="print JSON")
    _profiling.add_engine_arguments(stats)
    stats.set_defaults(run=_profiling.stats_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bus_timeout <= 0:
        parser.error("--bus-timeout must be a positive number of seconds")
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"streamcore: {e}", file=sys.stderr)
        return 1
