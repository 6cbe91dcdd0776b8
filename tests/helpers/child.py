"""Run Python code in a child interpreter and take the JSON object of the last line it
printed.  Tests that need a fresh process (PortAudio loaded anew, a server of their own, an
exit to watch) share this one runner.

A child that runs too long is not just killed: a few seconds before the timeout it writes
every thread's Python stack to its stderr (faulthandler) and exits, so a hang in CI says
where it was stuck instead of only that it was."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STACKS_BEFORE = 5.0  # seconds before the timeout when a stuck child dumps its stacks


class ChildFailed(AssertionError):
    """The child exited with a failure, ran over its time, or printed no JSON last."""


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 60,
               context: str = "") -> Any:
    """Run ``code`` (dedented; the repository root first on sys.path) and return the JSON of
    its last line; raise ChildFailed with its stderr (and ``context``, e.g. a server's log)
    when it fails or hangs."""
    dump_at = max(1.0, timeout - STACKS_BEFORE)
    source = (f"import sys, faulthandler\nsys.path.insert(0, {str(ROOT)!r})\n"
              f"faulthandler.dump_traceback_later({dump_at!r}, exit=True)\n"
              + textwrap.dedent(code))
    try:
        done = subprocess.run([sys.executable, "-c", source], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) \
            else (e.stderr or "")  # bytes even with text=True
        raise ChildFailed(f"the child ran over {timeout} s; its stderr:\n{stderr[-6000:]}"
                          f"\n{context}") from e
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        stuck = "Timeout (" in done.stderr  # faulthandler's heading
        what = f"was stuck after {dump_at} s (stacks below)" if stuck \
            else f"exited with {done.returncode}"
        raise ChildFailed(f"the child {what}; its stderr:\n{done.stderr[-6000:]}\n{context}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as e:
        raise ChildFailed(f"the child's last line is not JSON: {lines[-1]!r}") from e
