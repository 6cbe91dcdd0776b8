"""What every service fixture shares: finding programs, skipping or failing, stopping by pid."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip outside CI; in CI a missing service is a failure (nothing may be skipped there)."""
    if IN_CI:
        pytest.fail(f"CI=true and a required service is unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def require_program(name: str, package: str, candidates: tuple[str, ...] = ()) -> str:
    """The path of program ``name`` (or of the first existing candidate path), or skip/fail
    naming the Debian package that provides it."""
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        unavailable(f"{name} not found: apt-get install --no-install-recommends {package}")
    return found  # type: ignore[return-value]


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        unavailable(f"{what} needs root (to create users, start system services)")


class Service:
    """A started program with its log; ``stop()`` ends it by pid (TERM, then KILL)."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 **popen: object) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 (kept open for the process's life)
        popen.setdefault("stdout", self._log_file)
        popen.setdefault("stderr", subprocess.STDOUT)
        self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                        start_new_session=True, **popen)  # type: ignore[call-overload]
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self, limit: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except OSError as e:
            return f"(no log: {e})"

    def describe_failure(self, what: str) -> str:
        status = self.process.poll()
        state = "running" if status is None else f"exited with {status}"
        return f"{what}: {self.name} (pid {self.pid}, {state}); its log:\n{self.log_text()}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout)
            except ProcessLookupError:
                pass
        self._log_file.close()


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@contextlib.contextmanager
def hung_socket(path: Path) -> Iterator[str]:
    """A unix socket at ``path`` (any user may connect) that accepts connections and never
    says a word, as a hung bus daemon does; yields its D-Bus address."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o777)
    listener.listen(8)
    try:
        yield f"unix:path={path}"
    finally:
        listener.close()
        path.unlink()
