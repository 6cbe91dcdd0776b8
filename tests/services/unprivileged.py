"""Run Python code as a real unprivileged user: no capabilities, RLIMIT_RTPRIO 0.

The machine's Python lives in root's home, which other users cannot read, so the code runs in
a child forked from the test process (which has already imported what it needs) that then
drops to the test user.  A module first imported after the drop may fail to load: import
everything the function needs at the top of the test module.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import os
import pickle
import pwd
import resource
import select
import shutil
import signal
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.services.common import require_root

USER = "streamcore-test"  # a member of RT_GROUP in /etc/group
OUTSIDER = "streamcore-outsider"  # not a member
RT_GROUP = "streamcore-rt"  # the group the polkit rule of the rtkit fixture allows


@dataclass
class Outcome:
    """What the function did as the unprivileged user."""

    value: Any
    error: str | None  # the traceback text when it raised
    stdout: str
    stderr: str
    exit_status: int

    def unwrap(self) -> Any:
        """The value, or an AssertionError carrying the child's traceback and output."""
        if self.error is not None or self.exit_status != 0:
            raise AssertionError(
                f"unprivileged run failed (status {self.exit_status}):\n{self.error}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")
        return self.value


def _ensure_user(name: str, groups: list[str]) -> pwd.struct_passwd:
    """Create a system user (with its own group) if missing, as a member of ``groups``.

    Membership must be in /etc/group, not only set with setgroups(): polkit's isInGroup()
    looks the user's groups up in the group database.
    """
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
                       check=True)
    for group in groups:
        if name not in grp.getgrnam(group).gr_mem:
            subprocess.run(["usermod", "--append", "--groups", group, name], check=True)
    return pwd.getpwnam(name)


def _ensure_accounts() -> tuple[pwd.struct_passwd, pwd.struct_passwd, int]:
    """The test group and both users, created if missing: (member, outsider, rt_gid)."""
    try:
        grp.getgrnam(RT_GROUP)
    except KeyError:
        subprocess.run(["groupadd", "--system", RT_GROUP], check=True)
    member = _ensure_user(USER, [RT_GROUP])
    outsider = _ensure_user(OUTSIDER, [])
    return member, outsider, grp.getgrnam(RT_GROUP).gr_gid


class Unprivileged:
    """``run(func, *args)`` calls ``func(*args)`` in a forked child as the test user."""

    def __init__(self) -> None:
        self.member, self.outsider, self.rt_gid = _ensure_accounts()
        self.uid = self.member.pw_uid

    def run(self, func: Callable[..., Any], *args: Any, in_rt_group: bool = True,
            rlimits: dict[int, tuple[int, int]] | None = None, timeout: float = 60.0,
            pid_namespace: str | None = None, flatpak: Any = None) -> Outcome:
        """Fork, drop to the test user (the member of the rtkit-allowed group, or with
        ``in_rt_group=False`` the outsider, who is not), apply ``rlimits``
        ({resource.RLIMIT_X: (soft, hard)}), call the function.  ``pid_namespace``:
        first become pid 1 of a new PID namespace, keeping the host's /proc
        (``'host-proc'``, as ``unshare --pid --fork``) or mounting its own
        (``'own-proc'``, as ``unshare --pid --fork --mount-proc``).  ``flatpak``: a
        ``FlatpakSandbox`` (tests/services/portal.py): run inside a fake Flatpak sandbox,
        a PID namespace with its own /proc whose root holds /.flatpak-info, with the
        bwrapinfo.json the portal reads published for it.

        Its return value must pickle.  Output of the child goes to files read back here.
        """
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns
                os.close(read_end)
                self._child(func, args, in_rt_group, rlimits or {}, out, err, write_end,
                            pid_namespace, flatpak)
            os.close(write_end)
            payload = self._collect(pid, read_end, timeout)
            status = self._wait(pid, timeout)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
        value, error = (None, "the child sent no result") if not payload else pickle.loads(payload)
        return Outcome(value, error, stdout, stderr, status)

    def _child(self, func, args, in_rt_group, rlimits, out, err, write_end,
               pid_namespace=None, flatpak=None) -> None:
        code = 0
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            if pid_namespace is not None:
                _enter_pid_namespace(pid_namespace == "own-proc")
            if flatpak is not None:
                _enter_fake_flatpak(flatpak)
            resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))
            for which, (soft, hard) in rlimits.items():
                resource.setrlimit(which, (soft, hard))
            user = self.member if in_rt_group else self.outsider
            os.setgroups([self.rt_gid] if in_rt_group else [])
            os.setresgid(user.pw_gid, user.pw_gid, user.pw_gid)
            os.setresuid(user.pw_uid, user.pw_uid, user.pw_uid)  # drops every capability
            if flatpak is not None and flatpak.dumpable:  # as after an exec: the portal
                ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 1)  # opens /proc/PID/root
            try:
                result = (func(*args), None)
            except BaseException:
                result = (None, traceback.format_exc())
            os.write(write_end, pickle.dumps(result))
        except BaseException:
            code = 3
            with contextlib.suppress(BaseException):  # nothing left to report with
                os.write(write_end, pickle.dumps((None, traceback.format_exc())))
        finally:
            os._exit(code)

    @staticmethod
    def _collect(pid: int, fd: int, timeout: float) -> bytes:
        """Read the child's result until it closes the pipe (it exits), within ``timeout``."""
        deadline = time.monotonic() + timeout
        chunks = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    raise TimeoutError(f"the unprivileged child did not finish in {timeout} s")
                chunk = os.read(fd, 65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(fd)

    @staticmethod
    def _wait(pid: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise TimeoutError(f"the unprivileged child did not finish in {timeout} s")
            time.sleep(0.01)


CLONE_NEWNS, CLONE_NEWPID = 0x00020000, 0x20000000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
PR_SET_DUMPABLE = 4
MNT_DETACH = 2


def _enter_pid_namespace(own_proc: bool) -> None:
    """unshare(CLONE_NEWPID) and fork: returns in the new namespace's pid 1; the process that
    called it waits for that one and exits with its status.  ``own_proc``: also a mount
    namespace with a /proc of the new PID namespace (the host's ids are then hidden)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWPID | (CLONE_NEWNS if own_proc else 0)) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWPID)")
    pid = os.fork()
    if pid != 0:
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    if own_proc:
        if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
            raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
        if libc.mount(b"proc", b"/proc", b"proc", 0, None) != 0:
            raise OSError(ctypes.get_errno(), "mount -t proc proc /proc")


def unprivileged_service() -> Unprivileged:
    require_root("the unprivileged-user fixture")
    return Unprivileged()


def _mount(libc: Any, source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    def arg(text: str | None) -> bytes | None:
        return None if text is None else text.encode()
    if libc.mount(arg(source), arg(target), arg(fstype), flags, arg(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {source} on {target}")


def _enter_fake_flatpak(sandbox: Any) -> None:
    """Become pid 1 of a new PID namespace whose root is a tmpfs holding /.flatpak-info and
    the host's top-level folders bound in, with a /proc of its own (the host's ids hidden,
    as in Flatpak); the process that called it publishes the bwrapinfo.json that names the
    namespace, waits for pid 1 and exits with its status."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWPID | CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWPID | CLONE_NEWNS)")
    root = tempfile.mkdtemp(prefix="streamcore-flatpak-root-")
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid != 0:
        os.close(ready_read)
        folder = None
        try:
            folder = sandbox.publish(pid)
        finally:
            os.write(ready_write, b"1" if folder else b"0")
            os.close(ready_write)
            _, status = os.waitpid(pid, 0)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            libc.umount2(root.encode(), MNT_DETACH)  # this mount namespace is pid 1's too
            with contextlib.suppress(OSError):
                os.rmdir(root)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    os.close(ready_write)
    if os.read(ready_read, 1) != b"1":
        raise RuntimeError("bwrapinfo.json could not be published")
    os.close(ready_read)
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    _mount(libc, "tmpfs", root, "tmpfs", 0, "mode=0755")
    for name in sorted(os.listdir("/"), key=lambda n: n != "tmp"):  # /tmp (holding root) first
        source, target = f"/{name}", f"{root}/{name}"
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        elif name == "proc":
            os.mkdir(target)
        elif os.path.isdir(source):
            os.mkdir(target)
            _mount(libc, source, target, None, MS_BIND | MS_REC)
        elif os.path.isfile(source):
            open(target, "w").close()
            _mount(libc, source, target, None, MS_BIND)
    with open(f"{root}/.flatpak-info", "w") as info:
        info.write(sandbox.info_text())
    _mount(libc, "proc", f"{root}/proc", "proc", 0)
    os.chroot(root)
    os.chdir("/")
