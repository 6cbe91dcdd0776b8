"""`streamcore` without a usable native core: a copy of the package without its shared object,
and one with an old build (another ABI version), run in a child Python.

The editable install's import hook would find this checkout's ``_native`` for a package
imported from anywhere, so the child runs with ``-S`` (no site, hence no hook) and gets the
dependencies from site-packages on PYTHONPATH, after the copy.  Every child reports which
``streamcore`` and which ``streamcore._native`` it really imported, and the tests check that.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import cffi
import pytest

from streamcore import _facts
from streamcore._version import __version__
from streamcore.doctor import validate_report

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "streamcore"
SITE = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
REBUILD = "rebuild it with `pip install -e .`"

# Runs `python -m streamcore ARGS` in the child, then says what it imported (stderr, marked).
DRIVER = """
import runpy, sys
sys.argv = ["streamcore", *sys.argv[1:]]
try:
    runpy.run_module("streamcore", run_name="__main__", alter_sys=True)
finally:
    package = sys.modules.get("streamcore")
    native = sys.modules.get("streamcore._native")
    print("CHILD-STREAMCORE", getattr(package, "__file__", None), file=sys.stderr)
    print("CHILD-NATIVE", getattr(native, "__file__", None), file=sys.stderr)
"""


def copy_package(where: pathlib.Path) -> pathlib.Path:
    """streamcore's Python files under ``where``, without the compiled core; returns the
    PYTHONPATH entry."""
    shutil.copytree(PACKAGE, where / "streamcore",
                    ignore=shutil.ignore_patterns("_native*.so", "_native.c", "__pycache__"))
    return where


def old_build(package_root: pathlib.Path, build: pathlib.Path, abi: int) -> pathlib.Path:
    """A real shared object named streamcore._native whose sc_abi_version() is ``abi``: what
    an old build has (a few functions only), put into the copy."""
    ffi = cffi.FFI()
    ffi.cdef("int sc_abi_version(void); const char *sc_build_flags(void); "
             "int sc_probe_mlock(size_t bytes);")
    ffi.set_source("streamcore._native", f"""
#include <stddef.h>
int sc_abi_version(void) {{ return {abi}; }}
const char *sc_build_flags(void) {{ return "-DAN_OLD_BUILD"; }}
int sc_probe_mlock(size_t bytes) {{ (void)bytes; return 0; }}
""")
    built = pathlib.Path(ffi.compile(tmpdir=str(build)))
    return pathlib.Path(shutil.copy(built, package_root / "streamcore" / built.name))


class Child:
    """Runs Python with ``path`` first on PYTHONPATH and without the site hook."""

    def __init__(self, path: pathlib.Path, cwd: pathlib.Path, site: bool = False) -> None:
        self.path = path
        self.cwd = cwd  # not the checkout: '' on sys.path would find its streamcore first
        self.site = site
        self.native: str | None = None

    def env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "PYTHONPATH": os.pathsep.join([str(self.path), *([] if self.site else SITE)]),
                "PYTHONDONTWRITEBYTECODE": "1",
                "JACK_DEFAULT_SERVER": f"streamcore-absent-{os.getpid()}",
                "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.cwd}/no-bus.sock"}

    def python(self, *args: str) -> subprocess.CompletedProcess[str]:
        flags = [] if self.site else ["-S"]
        return subprocess.run([sys.executable, *flags, *args], cwd=self.cwd, env=self.env(),
                              capture_output=True, text=True, timeout=120)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m streamcore ARGS`; stderr without the markers, which are checked."""
        done = self.python("-c", DRIVER, *args)
        lines = done.stderr.splitlines()
        found = dict(line.split(" ", 1) for line in lines if line.startswith("CHILD-"))
        assert found["CHILD-STREAMCORE"] == str(self.path / "streamcore" / "__init__.py"), found
        self.native = None if found["CHILD-NATIVE"] == "None" else found["CHILD-NATIVE"]
        rest = "".join(line + "\n" for line in lines if not line.startswith("CHILD-"))
        return subprocess.CompletedProcess(done.args, done.returncode, done.stdout, rest)


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    for word in words:
        assert word in line, line


@pytest.fixture(scope="module")
def missing(tmp_path_factory) -> Child:
    return Child(copy_package(tmp_path_factory.mktemp("no-native")),
                 tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="module")
def stale(tmp_path_factory) -> Child:
    root = copy_package(tmp_path_factory.mktemp("stale-native"))
    child = Child(root, tmp_path_factory.mktemp("cwd"))
    child.built = old_build(root, tmp_path_factory.mktemp("build"),  # type: ignore[attr-defined]
                            _facts.NATIVE_ABI_VERSION + 1)
    return child


ENGINE_COMMANDS = [["play", "song.wav"], ["devices"], ["stats", "--null", "--seconds", "0.1"],
                   ["demo", "--null"], ["trace", "--seconds", "0.1"], ["top", "--seconds", "0.1"]]


class TestMissing:
    """No _native*.so at all: the report says so and how to rebuild; nothing crashes."""

    def test_the_child_imports_the_copy_without_native(self, missing):
        """The copy is what the child imports, and it finds no native core anywhere."""
        done = missing.python("-c", "import importlib.util, streamcore; "
                                    "print(streamcore.__file__); "
                                    "print(importlib.util.find_spec('streamcore._native'))")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [str(missing.path / "streamcore" / "__init__.py"), "None"]

    def test_info_says_missing_and_how_to_rebuild(self, missing):
        """`streamcore` prints its report with one line about the core; exit 0."""
        done = missing.cli("--bus-timeout", "0.5")
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and missing.native is None
        lines = done.stdout.splitlines()
        (core,) = [line for line in lines if line.startswith("native core: ")]
        assert core.startswith("native core: MISSING (No module named 'streamcore._native'): ")
        assert REBUILD in core and "make test" in core
        assert lines[0] == f"streamcore {__version__}"
        assert any(line.startswith("RLIMIT_RTPRIO") for line in lines)
        assert any(line.startswith("mlock: unknown") for line in lines)

    def test_info_json(self, missing):
        """--json: native.state 'missing' with the fix; the other sections are there."""
        done = missing.cli("--bus-timeout", "0.5", "info", "--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["native"]["loaded"] is False and report["native"]["state"] == "missing"
        assert REBUILD in report["native"]["fix"]
        assert report["mlock"]["can_lock"] is None
        assert set(report["capabilities"]) == {"CAP_SYS_NICE", "CAP_IPC_LOCK",
                                               "CAP_SYS_RESOURCE"}

    def test_doctor_runs_and_says_what_it_could_not_check(self, missing):
        """doctor exits 0 with a valid report; realtime and memlock are unknown, with why."""
        done = missing.cli("doctor", "--json", "--bus-timeout", "0.5")
        assert done.returncode == 0, done.stderr
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("streamcore: the native core is missing") and REBUILD in line
        report = json.loads(done.stdout)
        assert validate_report(report) == []
        checks = {c["id"]: c for c in report["checks"]}
        assert checks["realtime"]["status"] == "unknown"
        assert "native core is missing" in checks["realtime"]["detail"]
        assert checks["rlimit-memlock"]["status"] == "unknown"
        assert REBUILD in checks["rlimit-memlock"]["fix"]

    def test_version(self, missing):
        """--version prints the version."""
        done = missing.cli("--version")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"streamcore {__version__}\n"

    @pytest.mark.parametrize("command", ENGINE_COMMANDS, ids=lambda c: c[0])
    def test_commands_needing_it_exit_1_with_one_line(self, missing, command):
        """Each command that needs the engine: one line saying missing and how to rebuild."""
        done = missing.cli(*command)
        one_line_error(done, "streamcore: the native core is missing", REBUILD)

    def test_import_works_and_the_engine_says_why_not(self, missing):
        """`import streamcore` works; streamcore.Engine raises ImportError with the fix."""
        done = missing.python("-c", "import streamcore\n"
                                    "try:\n    streamcore.Engine\n"
                                    "except ImportError as e:\n    print(e)\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("streamcore.Engine needs the native core, and the "
                                      "native core is missing")
        assert REBUILD in done.stdout


class TestStale:
    """A build for another ABI version is reported stale and never used for the engine."""

    def test_info_says_stale(self, stale):
        """The report names the two ABI versions and how to rebuild; exit 0."""
        done = stale.cli("--bus-timeout", "0.5")
        assert done.returncode == 0, done.stderr
        assert stale.native == str(stale.built)  # the old build is what the child loaded
        (core,) = [line for line in done.stdout.splitlines() if line.startswith("native core")]
        assert core.startswith("native core: STALE (")
        assert (f"built for ABI {_facts.NATIVE_ABI_VERSION + 1}, this streamcore needs ABI "
                f"{_facts.NATIVE_ABI_VERSION}") in core
        assert REBUILD in core

    def test_info_json(self, stale):
        """--json: loaded, state 'stale', both versions."""
        done = stale.cli("--json", "--bus-timeout", "0.5")
        assert done.returncode == 0, done.stderr
        native = json.loads(done.stdout)["native"]
        assert native["loaded"] is True and native["state"] == "stale"
        assert native["abi_version"] == _facts.NATIVE_ABI_VERSION + 1
        assert native["expected_abi_version"] == _facts.NATIVE_ABI_VERSION

    def test_doctor_runs(self, stale):
        """doctor exits 0 and does not drive the old build's threads."""
        done = stale.cli("doctor", "--json", "--bus-timeout", "0.5")
        assert done.returncode == 0, done.stderr
        assert done.stderr.startswith("streamcore: the native core is stale")
        checks = {c["id"]: c for c in json.loads(done.stdout)["checks"]}
        assert checks["realtime"]["status"] == "unknown"

    @pytest.mark.parametrize("command", ENGINE_COMMANDS[:3], ids=lambda c: c[0])
    def test_commands_needing_it_exit_1_with_one_line(self, stale, command):
        """A command that needs the engine refuses the old build in one line."""
        done = stale.cli(*command)
        one_line_error(done, "streamcore: the native core is stale", "ABI", REBUILD)


def _editable_hook() -> bool:
    return any(pathlib.Path(d).glob("__editable__*streamcore*.pth") for d in SITE)


@pytest.mark.skipif(not _editable_hook(), reason="streamcore is not an editable install here")
def test_native_core_of_another_tree_is_stale(tmp_path):
    """With the site hook, a copy of the package gets this checkout's _native from the
    editable install: built from other sources, so reported stale and refused."""
    child = Child(copy_package(tmp_path / "copy"), tmp_path, site=True)
    done = child.cli("--json", "--bus-timeout", "0.5")
    assert done.returncode == 0, done.stderr
    assert child.native is not None
    assert pathlib.Path(child.native).resolve().parent == PACKAGE.resolve()
    native = json.loads(done.stdout)["native"]
    assert native["state"] == "stale" and "built from other sources" in native["error"]
    one_line_error(child.cli("devices"), "the native core is stale", "other sources")
