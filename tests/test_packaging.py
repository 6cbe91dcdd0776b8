"""streamcore installs as a wheel with its compiled core, and its code passes the linter."""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


class TestWheel:
    """A built wheel carries the native module and runs `python -m streamcore` by itself."""

    @pytest.fixture(scope="class")
    @classmethod
    def installed(cls, tmp_path_factory):
        out = tmp_path_factory.mktemp("wheel")
        # --no-build-isolation: build with the venv's setuptools and cffi (no download).
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(out), str(ROOT)], check=True, timeout=300)
        (wheel,) = out.glob("streamcore-*.whl")
        target = out / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(target), str(wheel)], check=True, timeout=120)
        return wheel, target

    def test_wheel_contains_the_compiled_core(self, installed):
        """The wheel holds streamcore/_native*.so, not the C sources' build leftovers."""
        wheel, _ = installed
        names = zipfile.ZipFile(wheel).namelist()
        assert any(n.startswith("streamcore/_native") and n.endswith(".so") for n in names)

    def test_runs_from_the_wheel(self, installed, tmp_path):
        """`python -m streamcore --json` works from the installed wheel, outside the tree."""
        _, target = installed
        done = subprocess.run([sys.executable, "-m", "streamcore", "--json"], cwd=tmp_path,
                              env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        native = json.loads(done.stdout)["native"]
        assert native["loaded"] and native["path"].startswith(str(target))


def test_ruff_is_clean():
    """ruff finds nothing in the project's Python (rules and their reasons: pyproject.toml)."""
    ruff = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent))
    assert ruff is not None, "ruff is a test dependency: pip install -e '.[test]'"
    done = subprocess.run([ruff, "check", "--no-cache", "."], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_is_clean():
    """mypy --strict finds nothing in streamcore/ (its config and the untyped third-party
    modules it ignores, each named: pyproject.toml [tool.mypy])."""
    mypy = shutil.which("mypy", path=str(pathlib.Path(sys.executable).parent))
    assert mypy is not None, "mypy is a test dependency: pip install -e '.[test]'"
    done = subprocess.run([mypy, "--strict", "--no-incremental", "streamcore"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_public_name_exists():
    """Each name in streamcore.__all__ is importable from the package (no stale entry)."""
    import streamcore

    assert [n for n in streamcore.__all__ if not hasattr(streamcore, n)] == []
