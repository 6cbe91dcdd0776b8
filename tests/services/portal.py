"""A private session bus with a real xdg-desktop-portal on it, both run as the test user.

As ../shared/ENV.md ("Realtime for sandboxed processes") verified: a dbus-daemon whose only
activatable service is the permission store (with the standard session config, a call to the
portal's name before it is owned would start a second portal, and one of them exits), then
`xdg-desktop-portal -v` with that bus as its session bus and the rtkit fixture's bus as its
system bus (or none: then it answers "RealtimeKit was not found").  Readiness is judged with
NameHasOwner, never with a call to the portal.  Both run as the unprivileged test user: the
portal maps and checks the pids of callers of its own user only.

The fake Flatpak sandbox the portal believes in (a PID namespace whose root holds
/.flatpak-info, and the bwrapinfo.json bwrap would write) is made by
``Unprivileged.run(..., flatpak=...)`` (tests/services/unprivileged.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jeepney import DBusAddress, new_method_call

from streamcore.bus import BusConnection, BusError
from streamcore.portal import PORTAL_NAME
from tests.services.common import Service, require_program, require_root, wait_until

PERMISSION_STORE = DBusAddress("/org/freedesktop/impl/portal/PermissionStore",
                               bus_name="org.freedesktop.impl.portal.PermissionStore",
                               interface="org.freedesktop.impl.portal.PermissionStore")

# Like /usr/share/dbus-1/session.conf, but activatable services come only from our folder
# (the permission store), and root may connect too (the fixture asks NameHasOwner as root).
_SESSION_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow user="{user}"/>
    <allow user="root"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""

_PERMISSION_STORE_SERVICE = """[D-BUS Service]
Name=org.freedesktop.impl.portal.PermissionStore
Exec={program}
"""


@dataclass
class FlatpakSandbox:
    """What makes the portal take a process for a Flatpak app: /.flatpak-info in its root
    (app id, instance id) and ``runtime_dir``/.flatpak/INSTANCE/bwrapinfo.json (the host pid
    of the sandbox's first process and its PID namespace).  ``dumpable``: the sandboxed
    process makes itself dumpable after dropping privileges, as an exec would (the portal
    opens /proc/PID/root)."""

    app_id: str
    instance_id: str
    runtime_dir: Path
    uid: int
    gid: int
    dumpable: bool = True

    def info_text(self) -> str:
        return (f"[Application]\nname={self.app_id}\nruntime=runtime/org.example.Platform/"
                f"x86_64/1\n\n[Instance]\ninstance-id={self.instance_id}\n")

    def publish(self, child_pid: int) -> Path:
        """Write bwrapinfo.json for the sandbox whose first process is ``child_pid``."""
        folder = self.runtime_dir / ".flatpak" / self.instance_id
        folder.mkdir(parents=True, exist_ok=True)
        for path in (folder.parent, folder):
            os.chown(path, self.uid, self.gid)
        info = folder / "bwrapinfo.json"
        pidns = os.stat(f"/proc/{child_pid}/ns/pid").st_ino
        info.write_text(json.dumps({"child-pid": child_pid, "pid-namespace": pidns}))
        os.chown(info, self.uid, self.gid)
        return folder


class PortalBus:
    """The running pair; ``address`` is the DBUS_SESSION_BUS_ADDRESS to give clients."""

    def __init__(self, workdir: Path, user: pwd.struct_passwd,
                 system_bus_address: str | None) -> None:
        self.workdir = workdir
        self.user = user
        self.system_bus_address = system_bus_address
        self.runtime_dir = workdir / "runtime"
        self.socket = self.runtime_dir / "bus"
        self.address = f"unix:path={self.socket}"
        self.services: list[Service] = []

    def _as_user(self) -> dict[str, object]:
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def start(self) -> None:
        dbus = require_program("dbus-daemon", "dbus")
        portal = require_program("xdg-desktop-portal", "xdg-desktop-portal",
                                 ("/usr/libexec/xdg-desktop-portal",))
        store = require_program("xdg-permission-store", "xdg-desktop-portal",
                                ("/usr/libexec/xdg-permission-store",))
        uid, gid = self.user.pw_uid, self.user.pw_gid
        services = self.workdir / "services"
        home = self.workdir / "home"
        for folder in (self.runtime_dir, services, home):
            folder.mkdir(mode=0o700)
            os.chown(folder, uid, gid)
        (services / "org.freedesktop.impl.portal.PermissionStore.service").write_text(
            _PERMISSION_STORE_SERVICE.format(program=store))
        config = self.workdir / "session.conf"
        config.write_text(_SESSION_CONF.format(socket=self.socket, services=services,
                                               user=self.user.pw_name))
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_RUNTIME_DIR": str(self.runtime_dir),
               "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config")}
        bus = Service("dbus-daemon", [dbus, f"--config-file={config}", "--nofork",
                                      "--nopidfile"], self.workdir / "dbus.log", env=env,
                      **self._as_user())
        self.services.append(bus)
        if not wait_until(self.socket.exists, 10, 0.01):
            raise RuntimeError(bus.describe_failure("the private session bus did not start"))
        env = {**env, "DBUS_SESSION_BUS_ADDRESS": self.address,
               # no system bus at all when there is no rtkit to forward to
               "DBUS_SYSTEM_BUS_ADDRESS": self.system_bus_address
               or f"unix:path={self.workdir}/no-system-bus"}
        daemon = Service("xdg-desktop-portal", [portal, "-v"], self.workdir / "portal.log",
                         env=env, **self._as_user())
        self.services.append(daemon)
        if not wait_until(lambda: not daemon.alive() or self.has_owner(PORTAL_NAME), 15, 0.02):
            raise RuntimeError(daemon.describe_failure("the portal did not claim its name"))
        if not daemon.alive():
            raise RuntimeError(daemon.describe_failure("the portal exited"))

    def has_owner(self, name: str) -> bool:
        try:
            with BusConnection(1.0, address=self.address) as bus:
                return bus.has_owner(name)
        except BusError:
            return False

    def set_permission(self, app_id: str, *values: str) -> None:
        """The permission store's entry for ``app_id`` in table and id 'realtime' (what
        `flatpak permission-set realtime realtime APP no` writes)."""
        with BusConnection(5.0, address=self.address) as bus:
            bus.call(new_method_call(PERMISSION_STORE, "SetPermission", "sbssas",
                                     ("realtime", True, "realtime", app_id, list(values))))

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.log_text()}" for s in self.services)

    def stop(self) -> None:
        store_pid = None
        with contextlib.suppress(BusError), BusConnection(1.0, address=self.address) as bus:
            from jeepney import message_bus
            if bus.has_owner(PERMISSION_STORE.bus_name):
                (store_pid,) = bus.call(message_bus.GetConnectionUnixProcessID(
                    PERMISSION_STORE.bus_name))
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        if store_pid:  # started by the bus, not by us: ended by its pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(store_pid), signal.SIGTERM)


@contextlib.contextmanager
def portal_bus(user: pwd.struct_passwd, system_bus_address: str | None) -> Iterator[PortalBus]:
    """A started session bus + portal for a ``with`` block, in a folder outside pytest's
    (root-private) tmp dir so that the test user reaches it."""
    require_root("the portal fixture")
    workdir = Path(tempfile.mkdtemp(prefix="streamcore-portal-"))
    os.chmod(workdir, 0o755)
    pair = PortalBus(workdir, user, system_bus_address)
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(workdir, ignore_errors=True)
