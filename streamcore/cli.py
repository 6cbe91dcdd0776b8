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
