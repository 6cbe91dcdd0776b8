"""The `streamcore` command as a user runs it: in a subprocess, from the installed package."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamcore", *args], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


class TestInfo:
    """`python -m streamcore` reports what the machine offers."""

    def test_json_has_every_field(self):
        """--json prints one JSON object with every documented section."""
        done = run_cli("--json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert set(report) >= {"version", "native", "portaudio", "mlock", "rlimits",
                               "capabilities", "rtkit"}
        assert report["native"]["loaded"] is True
        assert "-Wall" in report["native"]["cflags"]
        for name in ("RLIMIT_MEMLOCK", "RLIMIT_RTPRIO", "RLIMIT_RTTIME"):
            assert set(report["rlimits"][name]) == {"soft", "hard"}
        assert set(report["capabilities"]) >= {"CAP_SYS_NICE", "CAP_IPC_LOCK"}
        assert isinstance(report["rtkit"]["answers"], bool)
        assert isinstance(report["mlock"]["can_lock"], bool)

    def test_text_names_the_native_module(self):
        """The plain report says where the native core was loaded from."""
        done = run_cli()
        assert done.returncode == 0, done.stderr
        assert "native core: " in done.stdout and "_native" in done.stdout

    def test_dead_bus_costs_at_most_the_timeout(self, tmp_path):
        """A system bus address that points nowhere is reported, not waited on."""
        env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/nothing.sock",
               "PATH": "/usr/bin:/bin"}
        done = run_cli("--json", "--bus-timeout", "0.5", env=env)
        assert done.returncode == 0, done.stderr
        rtkit = json.loads(done.stdout)["rtkit"]
        assert rtkit["answers"] is False
        assert "no system bus" in rtkit["error"]

    def test_bad_option_is_a_usage_error(self):
        """A bad option value exits 2 with one line on stderr, no traceback."""
        done = run_cli("--bus-timeout", "-1")
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        assert "--bus-timeout" in done.stderr


@pytest.mark.parametrize("module", ["streamcore", "streamcore._native"])
def test_imports(module):
    """The package and its compiled core import."""
    __import__(module)
