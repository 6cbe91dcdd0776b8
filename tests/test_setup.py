"""The setup behind `make demo` / `make test`: system packages are checked, never half-done."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

from tests.services.common import require_program
from tests.services.unprivileged import USER

ROOT = pathlib.Path(__file__).resolve().parent.parent


class TestSystemPackages:
    """`make system-packages` installs what is missing as root, and otherwise says how."""

    def test_present_packages_need_nothing(self):
        """With every package installed the check passes and installs nothing."""
        done = subprocess.run(["make", "-s", "-C", str(ROOT), "system-packages"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "installing" not in done.stdout

    def test_non_root_gets_the_apt_line(self, unprivileged):
        """A user who is not root and misses a package is told the exact apt-get line, and
        make fails instead of going on half set up."""
        runuser = require_program("runuser", "util-linux")
        # A world-readable copy: the checkout (and pytest's tmp dir) may be root's alone.
        workdir = pathlib.Path(tempfile.mkdtemp(prefix="streamcore-mk-"))
        try:
            shutil.copy(ROOT / "Makefile", workdir / "Makefile")
            os.chmod(workdir, 0o755)
            os.chmod(workdir / "Makefile", 0o644)
            done = subprocess.run(
                [runuser, "-u", USER, "--", "make", "-s", "-C", str(workdir), "system-packages",
                 "DEB_PACKAGES=dpkg streamcore-no-such-package"],
                capture_output=True, text=True, timeout=60)
        finally:
            shutil.rmtree(workdir)
        assert done.returncode != 0
        line = "apt-get install --no-install-recommends streamcore-no-such-package\n"
        assert line in done.stderr, done.stderr
