"""Exit statuses of the `streamcore` command, and the one place exceptions become them.

0 success; 1 a runtime failure (something failed while running: the device or its audio
server went away, a pipe's reader left, a disk error; or the native core a command needs is
missing or stale); 2 a usage error (the command line cannot be carried out as written: a bad
option value, a missing or undecodable file, an unknown device); 130 interrupted (Ctrl-C).
Errors are one line on stderr (``streamcore: ...``); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["FAILURE", "INTERRUPTED", "OK", "USAGE", "UsageError", "one_line", "run_guarded"]

OK = 0
FAILURE = 1
USAGE = 2
INTERRUPTED = 130


class UsageError(Exception):
    """The command line cannot be carried out as written (exit status 2)."""


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (its type's name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call a command's handler; its exceptions become an exit status and one line on stderr
    (re-raised with ``--debug``)."""
    try:
        return int(run(args))
    except KeyboardInterrupt:
        return INTERRUPTED
    except UsageError as e:
        if args.debug:
            raise
        print(f"streamcore: {e}", file=sys.stderr)
        return USAGE
    except Exception as e:
        if args.debug:
            raise
        print(f"streamcore: {one_line(e)}", file=sys.stderr)
        return FAILURE
