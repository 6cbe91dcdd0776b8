"""The `streamcore` command (also `python -m streamcore`).

Commands: ``info`` (the default: what this machine offers), ``doctor``, ``devices``, ``play``,
``stats``, ``demo``, ``trace``, ``top``; ``--version``.  The package, by concern:

- ``parsing``: the argparse grammar (argparse is used nowhere else in streamcore);
- ``commands``: one handler per subcommand, taking the parsed arguments, calling the library
  with plain values and returning the exit status;
- ``output``: the sink the output options name, and the no-device fallback;
- ``progress``: the live progress line and the figures printed at the end of a run;
- ``exits``: the exit statuses, and exceptions turned into them.

Exit status: 0 success; 1 a runtime failure (something failed while running: the device or
its audio server went away, a pipe's reader left, a disk error; or the native core a command
needs is missing or stale); 2 a usage error (the command line cannot be carried out as
written: a bad option value, a missing or undecodable file, an unknown device); 130
interrupted (Ctrl-C; ``play`` fades out first).  Errors are one line on stderr
(``streamcore: ...``); ``--debug`` shows the traceback instead.

With no sound device at all, ``play`` and ``demo`` say so in one line and play to the null
sink while writing what would have been heard to a WAV file, then print the run's figures.

Without a usable native core (not built, or built from other sources), ``info``, ``doctor``
and ``--version`` still run and say how to rebuild it; the commands that need it exit 1 with
that line.  Nothing here imports the engine until a command that needs it runs.
"""

from __future__ import annotations

import sys

from streamcore import _facts
from streamcore.cli.exits import FAILURE, UsageError, run_guarded
from streamcore.cli.parsing import build_parser

__all__ = ["UsageError", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the `streamcore` command line.

    Parameters
    ----------
    argv : list of str or None
        The arguments after the program's name; None: ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status (see the module docstring).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.bus_timeout <= 0:
        parser.error("--bus-timeout must be a positive number of seconds")
    if args.needs_native:
        problem = _facts.native_core().problem()
        if problem is not None:
            print(f"streamcore: {problem}", file=sys.stderr)
            return FAILURE
    return run_guarded(args.run, args)
