"""A private system bus with polkitd and rtkit-daemon on it, for the unprivileged realtime path.

Started as ../shared/ENV.md verified: a copy of Debian's system bus config listening on a
socket of our own (so the machine's bus, if any, is untouched), a polkit rule that allows the
test group the RealtimeKit actions, polkitd, then rtkit-daemon.  Pitfalls handled here:
rtkit-daemon sets RLIMIT_NPROC=3 for user rtkit, so only one may run on the machine; and it
sets RLIMIT_FSIZE=0, so its output must never go to a regular file (it would die of SIGXFSZ):
it goes to a pipe that a thread drains into memory instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from tests.services.common import (
    Service,
    require_program,
    require_root,
    unavailable,
    wait_until,
)
from tests.services.unprivileged import RT_GROUP

POLKIT_RULE = Path("/etc/polkit-1/rules.d/50-streamcore-test.rules")
RULE_TEXT = f"""// Written by streamcore's test fixture (tests/services/rtkit.py), removed after.
polkit.addRule(function(action, subject) {{
    if (action.id.indexOf("org.freedesktop.RealtimeKit1.") == 0 &&
        subject.isInGroup("{RT_GROUP}")) {{
        return polkit.Result.YES;
    }}
}});
"""


def _other_rtkit_daemons() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "rtkit-daemon":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class _PipeDrain:
    """Keeps a daemon's output in memory (rtkit-daemon must not write to a regular file)."""

    def __init__(self, stream) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for line in iter(stream.readline, b""):
            self.text = (self.text + line.decode(errors="replace"))[-20000:]


class RtkitBus:
    """The running trio; ``address`` is the DBUS_SYSTEM_BUS_ADDRESS to use."""

    def __init__(self, workdir: Path, rtkit_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.rtkit_args = rtkit_args  # rtkit-daemon's options (its canary's, say)
        self.services: list[Service] = []
        self._rtkit_drain: _PipeDrain | None = None
        self.machine_lock: _MachineLock | None = None
        self.address = f"unix:path={workdir}/bus.sock"

    def start(self) -> None:
        dbus = require_program("dbus-daemon", "dbus")
        polkitd = require_program("polkitd", "polkitd", ("/usr/lib/polkit-1/polkitd",))
        rtkitd = require_program("rtkit-daemon", "rtkit", ("/usr/libexec/rtkit-daemon",))
        others = _other_rtkit_daemons()
        if others:
            unavailable(f"another rtkit-daemon already runs (pid {others}); only one may run "
                        "per machine (it limits user rtkit to 3 processes): stop it first")
        os.chmod(self.workdir, 0o755)  # the unprivileged test user must reach bus.sock
        config = self.workdir / "system.conf"
        config.write_text(self._bus_config())
        bus = Service("dbus-daemon", [dbus, f"--config-file={config}", "--nofork",
                                      "--nopidfile"], self.workdir / "dbus.log")
        self.services.append(bus)
        sock = self.workdir / "bus.sock"
        if not wait_until(sock.exists, 10):
            raise RuntimeError(bus.describe_failure("the private system bus did not start"))
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}
        POLKIT_RULE.parent.mkdir(parents=True, exist_ok=True)
        POLKIT_RULE.write_text(RULE_TEXT)
        polkit = Service("polkitd", [polkitd, "--no-debug"], self.workdir / "polkitd.log", env=env)
        self.services.append(polkit)
        if not wait_until(lambda: self._has_owner("org.freedesktop.PolicyKit1"), 15, 0.1):
            raise RuntimeError(polkit.describe_failure("polkitd did not claim its bus name"))
        rtkit = Service("rtkit-daemon", [rtkitd, *self.rtkit_args], self.workdir / "rtkit.unused",
                        env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._rtkit_drain = _PipeDrain(rtkit.process.stdout)
        self.services.append(rtkit)
        if not wait_until(lambda: self._has_owner("org.freedesktop.RealtimeKit1"), 15, 0.1):
            raise RuntimeError(f"rtkit-daemon did not claim its bus name (pid {rtkit.pid}, "
                               f"status {rtkit.process.poll()}); its output:\n{self.rtkit_log}")

    @property
    def rtkit_log(self) -> str:
        return self._rtkit_drain.text if self._rtkit_drain else ""

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.log_text()}" for s in self.services[:-1]) + \
            f"\n--- rtkit-daemon\n{self.rtkit_log}"

    def _has_owner(self, name: str) -> bool:
        from jeepney import message_bus

        from streamcore.bus import BusConnection, BusError

        saved = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = self.address
        try:
            with BusConnection(1.0) as bus:
                return bool(bus.call(message_bus.NameHasOwner(name))[0])
        except BusError:
            return False
        finally:
            if saved is None:
                del os.environ["DBUS_SYSTEM_BUS_ADDRESS"]
            else:
                os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = saved

    def _bus_config(self) -> str:
        text = Path("/usr/share/dbus-1/system.conf").read_text()
        text = re.sub(r"<listen>.*?</listen>", f"<listen>{self.address}</listen>", text)
        text = re.sub(r"<pidfile>.*?</pidfile>", "", text)
        text = text.replace("<fork/>", "")
        return text.replace("<includedir>system.d</includedir>",
                            "<includedir>/usr/share/dbus-1/system.d</includedir>")

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        POLKIT_RULE.unlink(missing_ok=True)
        if self.machine_lock is not None:
            self.machine_lock.release()
            self.machine_lock = None


# Test runs of several checkouts on one machine take turns here instead of colliding on the
# one rtkit-daemon a machine may run.
MACHINE_LOCK = Path("/run/lock/streamcore-rtkit-test.lock")
LOCK_WAIT = 600.0


class _MachineLock:
    def __init__(self) -> None:
        MACHINE_LOCK.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(MACHINE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def acquire(self, timeout: float) -> bool:
        return wait_until(self._try, timeout, 0.2)

    def _try(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1


@contextlib.contextmanager
def rtkit_bus_in_use(rtkit_args: tuple[str, ...] = ()) -> Iterator[RtkitBus]:
    """A started rtkit bus, this process's DBUS_SYSTEM_BUS_ADDRESS pointing at it, for a
    ``with`` block (a module's fixture): the address is restored and the trio stopped after.
    Its folder is not under pytest's tmp dir: that is private to root, and the unprivileged
    test user must reach the bus socket."""
    workdir = Path(tempfile.mkdtemp(prefix="streamcore-bus-"))
    trio = start_rtkit_bus(workdir, rtkit_args)
    saved = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = trio.address
    try:
        yield trio
    finally:
        if saved is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = saved
        trio.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def start_rtkit_bus(workdir: Path, rtkit_args: tuple[str, ...] = ()) -> RtkitBus:
    require_root("the rtkit bus fixture")
    lock = _MachineLock()
    if not lock.acquire(LOCK_WAIT):
        lock.release()
        unavailable(f"another test run held {MACHINE_LOCK} (its rtkit bus) for {LOCK_WAIT:g} s")
    trio = RtkitBus(workdir, rtkit_args)
    trio.machine_lock = lock
    try:
        trio.start()
    except BaseException:
        trio.stop()
        raise
    return trio
