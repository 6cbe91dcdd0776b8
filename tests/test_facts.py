"""streamcore._facts reads this process's rlimits, capabilities and mlock probe the way the
kernel reports them, and is the one copy doctor, system and realtime use (issue 13)."""

from __future__ import annotations

import ast
import errno
import os
import pathlib
import re
import resource

import prctl
import pytest

import streamcore._native  # noqa: F401 (imported before the unprivileged child drops root)
from streamcore import _facts

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "streamcore"
LIMITS = {"RLIMIT_RTPRIO": resource.RLIMIT_RTPRIO, "RLIMIT_MEMLOCK": resource.RLIMIT_MEMLOCK,
          "RLIMIT_RTTIME": resource.RLIMIT_RTTIME, "RLIMIT_NICE": resource.RLIMIT_NICE}


def cap_eff(path: str = "/proc/self/status") -> int:
    """CapEff read here, independently of _facts."""
    for line in pathlib.Path(path).read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no CapEff in {path}")


class TestRlimits:
    """rlimit() is resource.getrlimit with RLIM_INFINITY as None."""

    @pytest.mark.parametrize("name", sorted(LIMITS))
    def test_matches_getrlimit(self, name):
        """Each limit streamcore reads equals getrlimit's, unlimited as None."""
        soft, hard = resource.getrlimit(LIMITS[name])
        expected = tuple(None if v == resource.RLIM_INFINITY else v for v in (soft, hard))
        assert _facts.rlimit(LIMITS[name]) == expected
        assert _facts.rlimit_fields(LIMITS[name]) == dict(zip(("soft", "hard"), expected,
                                                                strict=True))

    def test_reads_the_limit_now(self, unprivileged):
        """A limit changed a moment ago reads changed (no caching), finite and unlimited."""
        def read_after_setting() -> tuple:
            before = _facts.rlimit(resource.RLIMIT_RTTIME)
            resource.setrlimit(resource.RLIMIT_RTTIME, (12345, 67890))
            return before, _facts.rlimit(resource.RLIMIT_RTTIME)

        infinity = resource.RLIM_INFINITY
        outcome = unprivileged.run(read_after_setting,
                                   rlimits={resource.RLIMIT_RTTIME: (infinity, infinity)})
        assert outcome.unwrap() == ((None, None), (12345, 67890))

    def test_limit_text(self):
        """None is 'unlimited'; a number carries its unit."""
        assert _facts.limit_text(None, " B") == "unlimited"
        assert _facts.limit_text(65536, " B") == "65536 B"
        assert _facts.unlimited_as_none(resource.RLIM_INFINITY) is None
        assert _facts.unlimited_as_none(0) == 0


def _capabilities_as_user() -> tuple:
    return (_facts.capabilities(), _facts.has_capability("CAP_SYS_NICE"),
            cap_eff("/proc/thread-self/status"))


class TestCapabilities:
    """capabilities() reads CapEff of the calling thread (as capget does) or of a pid."""

    def test_matches_proc_and_prctl(self):
        """The bits equal /proc/self/status CapEff and python-prctl's reading (the copy
        doctor and `info` used before)."""
        mask = cap_eff()
        caps = _facts.capabilities()
        assert list(caps) == ["CAP_SYS_NICE", "CAP_IPC_LOCK", "CAP_SYS_RESOURCE"]
        for name, bit in _facts.CAPABILITY_BITS.items():
            assert caps[name] == bool(mask >> bit & 1)
        assert caps["CAP_SYS_NICE"] == bool(prctl.cap_effective.sys_nice)
        assert caps["CAP_IPC_LOCK"] == bool(prctl.cap_effective.ipc_lock)
        assert caps["CAP_SYS_RESOURCE"] == bool(prctl.cap_effective.sys_resource)
        assert _facts.effective_capabilities() == mask
        assert _facts.effective_capabilities(os.getpid()) == mask

    def test_names_choose_and_order_the_keys(self):
        """doctor asks for two of them, in its order."""
        caps = _facts.capabilities(("CAP_IPC_LOCK", "CAP_SYS_NICE"))
        assert list(caps) == ["CAP_IPC_LOCK", "CAP_SYS_NICE"]

    def test_unprivileged_thread_has_none(self, unprivileged):
        """After the drop to the test user every capability reads False, as /proc says."""
        caps, nice, mask = unprivileged.run(_capabilities_as_user).unwrap()
        assert mask == 0
        assert caps == {"CAP_SYS_NICE": False, "CAP_IPC_LOCK": False, "CAP_SYS_RESOURCE": False}
        assert nice is False

    def test_unreadable_is_none_or_raises(self):
        """No such process: has_capability says None, capabilities raises OSError."""
        gone = 2 ** 22 + 7  # above pid_max's default ceiling: never a live pid
        assert _facts.has_capability("CAP_SYS_NICE", pid=gone) is None
        with pytest.raises(OSError):
            _facts.capabilities(pid=gone)


def _probe_as_user(nbytes: int) -> str | None:
    return _facts.probe_mlock(nbytes)


class TestMlockProbe:
    """probe_mlock() says whether memory can be locked now, and why not."""

    def test_root_can_lock(self):
        """Here (root, CAP_IPC_LOCK) 64 KiB lock."""
        assert _facts.probe_mlock(64 * 1024) is None

    def test_refused_without_cap_and_limit(self, unprivileged):
        """No CAP_IPC_LOCK and RLIMIT_MEMLOCK 0: the kernel's EPERM, as text."""
        outcome = unprivileged.run(_probe_as_user, 64 * 1024,
                                   rlimits={resource.RLIMIT_MEMLOCK: (0, 0)})
        assert outcome.unwrap() == os.strerror(errno.EPERM)

    def test_within_the_limit_without_cap(self, unprivileged):
        """No CAP_IPC_LOCK but a limit above the size: locked."""
        outcome = unprivileged.run(_probe_as_user, 64 * 1024,
                                   rlimits={resource.RLIMIT_MEMLOCK: (1 << 20, 1 << 20)})
        assert outcome.unwrap() is None


class TestNativeCore:
    """native_core() says whether streamcore._native is this package's current build."""

    def test_this_build_is_ok(self):
        """The installed build: beside the package, of the ABI the Python code expects."""
        core = _facts.native_core()
        assert core.ok, core
        assert pathlib.Path(core.path).resolve().parent == PACKAGE.resolve()
        assert core.abi_version == _facts.NATIVE_ABI_VERSION
        assert "-Wall" in core.cflags
        assert core.error is None and core.problem() is None

    def test_abi_version_follows_the_header(self):
        """NATIVE_ABI_VERSION is the header's SC_ABI_VERSION: bump both together."""
        header = (ROOT / "native" / "streamcore.h").read_text()
        (value,) = re.findall(r"^#define SC_ABI_VERSION (\d+)$", header, flags=re.M)
        assert int(value) == _facts.NATIVE_ABI_VERSION

    def test_problem_says_how_to_rebuild(self):
        """A missing core's line names the state, the cause and the commands to rebuild."""
        core = _facts.NativeCore("missing", None, None, None, "No module named 'x'")
        line = core.problem()
        assert line.startswith("the native core is missing (No module named 'x'): rebuild")
        assert "pip install -e ." in line and str(ROOT) in line and "make test" in line


# ---- one copy ------------------------------------------------------------------------------

# Reading these facts anywhere else in streamcore/ is a second copy.  ring.py's
# MemoryLockError message still reads RLIMIT_MEMLOCK itself: its owner moves it to _facts.
_READERS = {"getrlimit", "RLIM_INFINITY", "sc_probe_mlock", "sc_abi_version", "cap_effective"}
_ALLOWED = {"_facts.py", "ring.py"}


def _facts_read_in(path: pathlib.Path) -> set[str]:
    """The fact readers ``path`` names in code (attributes, names, 'CapEff' strings)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in _READERS:
            found.add(node.attr)
        elif isinstance(node, ast.Name) and node.id in _READERS:
            found.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                node.value.startswith("CapEff"):
            found.add("CapEff")
    return found


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py")
                                        if p.name not in _ALLOWED),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_second_copy(path):
    """No module but _facts reads rlimits, CapEff, the mlock probe or the ABI version."""
    assert _facts_read_in(path) == set()

