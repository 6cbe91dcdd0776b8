"""The C core under sanitizers: the native-heavy tests on an ASan+UBSan build, and
ThreadSanitizer on small C drivers of the ring and the SPSC queue.

AddressSanitizer + UndefinedBehaviorSanitizer: tests/sanitize.py builds every cffi module with
``-fsanitize=address,undefined`` into build/sanitize/ (cached), puts it in a copy of the package,
and the tests of NATIVE_TEST_FILES run there in a child pytest with libasan preloaded (CPython
itself is not instrumented, so ASan's runtime must be the first library loaded).  Every process
of that run (forked children and subprocesses inherit the environment) writes its ASan reports
to a log directory, so a report from a child whose stderr a test swallows is seen too; UBSan's
go to stderr, which the child pytest leaves uncaptured at the fd level (--capture=sys).

ThreadSanitizer does not mix with an uninstrumented CPython, so it runs on C programs instead:
tests/native/tsan_ring.c (native/ring.c's public API) and tests/native/tsan_spsc.c (spsc.h),
each a producer and a consumer thread checking every value, built and run by ``make tsan``.

Outside CI a missing compiler or sanitizer runtime skips; with CI=true it fails.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

from tests import sanitize
from tests.services.common import unavailable

ROOT = pathlib.Path(__file__).resolve().parent.parent

# The test files that drive the C core hardest, run on the sanitized build.
NATIVE_TEST_FILES = [
    "tests/test_ring.py",
    "tests/test_engine.py",
    "tests/test_mix.py",
    "tests/test_pipe_sink.py",
    "tests/test_file_sink.py",
    "tests/test_watchdog.py",
    "tests/test_ring_process.py",
    "tests/test_core_rules.py",
    "tests/test_ownership.py",
    "tests/test_stateful.py",
]

# Tests of those files that cannot pass under ASan, and why.  All files are kept: none needs
# anything ASan lacks as a whole.
DESELECTED = {
    # ASan's runtime intercepts mlock/munlock/mlockall and makes them no-ops that return 0
    # ("AddressSanitizer ignores mlock/mlockall/munlock/munlockall" at verbosity=1; locking
    # its terabytes of shadow mappings would stall the kernel): nothing is locked, so
    # VmLck does not grow and an RLIMIT_MEMLOCK too small is never hit.
    "tests/test_ring.py::TestMemoryLock::test_vmlck_grows_by_the_ring_size":
        "mlock is a no-op under ASan",
    "tests/test_ring.py::TestMemoryLock::test_limit_too_small_as_unprivileged_user":
        "mlock is a no-op under ASan",
    "tests/test_engine.py::TestUnprivileged::test_runs_tainted":
        "mlock is a no-op under ASan (no MLOCK_FAILED taint)",
}

# What a sanitizer prints when it found something (ASan, and UBSan's per-report line).
REPORT_MARKERS = ("ERROR: AddressSanitizer", "runtime error:")

CHILD_TIMEOUT = 600  # s: a hang is a failure with the output so far, not a stuck suite


def _require_compiler() -> None:
    if shutil.which(sanitize.CC) is None:
        unavailable(f"{sanitize.CC} not found: apt-get install --no-install-recommends gcc")


def _runtime(name: str) -> str:
    try:
        return sanitize.runtime_library(name)
    except FileNotFoundError as e:
        unavailable(str(e))
        raise  # not reached: unavailable() skips or fails


# The child: check that `import streamcore` found the sanitized build (and not the editable
# install's finder or the repository's streamcore/), run pytest, check again afterwards.
_CHILD = """
import os, sys
import streamcore._native as native
expected = os.environ["SANITIZED_NATIVE"]
if os.path.realpath(native.__file__) != expected:
    sys.exit(f"streamcore._native is {native.__file__}, not the sanitized {expected}")
flags = native.ffi.string(native.lib.sc_build_flags()).decode()
if "-fsanitize=address" not in flags:
    sys.exit(f"the sanitized module reports the build flags {flags!r}")
print("sanitized module:", native.__file__, flush=True)
import pytest
status = pytest.main(sys.argv[1:])
if os.path.realpath(sys.modules["streamcore._native"].__file__) != expected:
    sys.exit("streamcore._native was replaced during the run")
sys.exit(int(status))
"""


@pytest.fixture(scope="module")
def sanitized_tree():
    """A world-readable copy of the package with the ASan+UBSan build (the unprivileged-user
    tests fork and drop to a user that cannot read pytest's private tmp dir)."""
    _require_compiler()
    _runtime("libasan.so")
    _runtime("libubsan.so")
    built = sanitize.build()
    tree = pathlib.Path(tempfile.mkdtemp(prefix="streamcore-sanitize-"))
    tree.chmod(0o755)
    try:
        yield sanitize.assemble(built, tree)
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def _run(argv: list[str], env: dict[str, str], cwd: pathlib.Path,
         timeout: float) -> tuple[int | None, str]:
    """Run argv in its own session; returns (status, stdout + stderr).  On timeout the
    session is killed and the status is None."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out + f"\n(timed out after {timeout} s)"
    return proc.returncode, out


def _excerpt(report: str, frames: int = 12) -> str:
    """A sanitizer report without the deep end of its stacks (dozens of CPython frames)."""
    return "".join(line for line in report.splitlines(keepends=True)
                   if not (m := re.match(r"\s+#(\d+) ", line)) or int(m[1]) < frames)


def test_native_tests_under_address_and_undefined_sanitizers(sanitized_tree):
    """The native-heavy test files pass on the ASan+UBSan build with no sanitizer report from
    any process of the run."""
    (so,) = (sanitized_tree / "streamcore").glob("_native*.so")
    logs = pathlib.Path(tempfile.mkdtemp(prefix="streamcore-sanitize-logs-"))
    logs.chmod(0o1777)  # the unprivileged-user tests' children report here as well
    env = dict(
        os.environ,
        LD_PRELOAD=_runtime("libasan.so"),
        # No leak check: CPython's own allocations at exit are not leaks.  abort_on_error: a
        # report ends the process with SIGABRT, which the test that ran it cannot miss.
        ASAN_OPTIONS=f"detect_leaks=0:abort_on_error=1:log_path={logs}/asan",
        # UBSan's runtime (libubsan beside libasan) ignores log_path here: its reports go to
        # stderr, which is why the child pytest captures sys.stdout/err only, not fd 2.
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(sanitized_tree),
                                                 os.environ.get("PYTHONPATH")])),
        SANITIZED_NATIVE=os.path.realpath(so),
        PYTHONDONTWRITEBYTECODE="1",
    )
    deselect = [arg for node in DESELECTED for arg in ("--deselect", node)]
    argv = [sys.executable, "-c", _CHILD, "-p", "no:cacheprovider", "-q", "-m", "not slow",
            "--capture=sys", *deselect, *NATIVE_TEST_FILES]
    try:
        status, out = _run(argv, env, sanitized_tree, CHILD_TIMEOUT)
        reports = "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')}"
                          for p in sorted(logs.iterdir()))
    finally:
        shutil.rmtree(logs, ignore_errors=True)
    text = out + reports
    assert "sanitized module: " in out, out[-6000:]
    for marker in REPORT_MARKERS:
        at = text.find(marker)
        if at >= 0:  # show the report from the line before its first one, stacks cut short
            start = text.rfind("\n", 0, max(text.rfind("\n", 0, at), 0)) + 1
            pytest.fail(f"sanitizer report:\n{_excerpt(text[start:start + 30000])[:8000]}")
    assert status == 0, f"child pytest exited {status}:\n{_excerpt(out)[-8000:]}"


def test_ring_and_spsc_under_thread_sanitizer():
    """`make tsan` builds the two C drivers with -fsanitize=thread and runs them: both move
    every value intact and ThreadSanitizer reports nothing."""
    _require_compiler()
    _runtime("libtsan.so")
    if shutil.which("make") is None:
        unavailable("make not found: apt-get install --no-install-recommends make")
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)  # a parent make's -j/-k must not change this run
    status, out = _run(["make", "--no-print-directory", "tsan", f"CC={sanitize.CC}",
                        "TSAN_SECONDS=2"], env, ROOT, CHILD_TIMEOUT)
    assert "WARNING: ThreadSanitizer" not in out, out[-12000:]
    assert "FATAL: ThreadSanitizer" not in out, out[-4000:]
    assert status == 0, f"make tsan exited {status}:\n{out[-8000:]}"
    for driver in ("tsan_ring", "tsan_spsc"):
        assert f"{driver}: ok" in out, out[-4000:]
        # each driver says whether it was compiled with TSan (__SANITIZE_THREAD__)
        summary = [line for line in out.splitlines()
                   if line.startswith(f"{driver}: ") and "thread sanitizer" in line]
        assert summary and summary[-1].endswith("thread sanitizer on"), out[-4000:]
