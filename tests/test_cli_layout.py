"""The command line is one package, streamcore/cli/, and the library under it takes plain
values (issue 13: argparse only in cli/)."""

from __future__ import annotations

import ast
import importlib.metadata
import io
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

from streamcore import doctor, profiling
from streamcore._version import __version__

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "streamcore"


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py")
                                        if "cli" not in p.relative_to(PACKAGE).parts),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_argparse_only_in_the_cli_package(path):
    """No module outside streamcore/cli/ imports argparse."""
    assert "argparse" not in _imports(path)


class TestEntryPoints:
    """`streamcore` (the console script) and `python -m streamcore` run the same main()."""

    def test_console_script_target_is_cli_main(self):
        """[project.scripts] names streamcore.cli:main, and that loads."""
        (script,) = [e for e in importlib.metadata.entry_points(group="console_scripts")
                     if e.name == "streamcore"]
        assert script.value == "streamcore.cli:main"
        from streamcore.cli import main

        assert script.load() is main

    def test_console_script_runs(self):
        """The installed script prints the version and the report."""
        script = shutil.which("streamcore", path=str(pathlib.Path(sys.executable).parent))
        assert script is not None
        done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"streamcore {__version__}\n"
        done = subprocess.run([script, "--json"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["native"]["state"] == "ok"


class TestLibraryTakesPlainValues:
    """What the commands call is usable without a command line."""

    def test_no_command_handlers_left_in_the_library(self):
        """doctor and profiling keep no handler of parsed arguments: those are the CLI's."""
        assert not hasattr(doctor, "run")
        for name in ("trace_command", "top_command", "add_engine_arguments"):
            assert not hasattr(profiling, name)

    def test_trace_session(self, tmp_path):
        """trace_session runs a demo engine and writes a trace, from plain arguments."""
        done = profiling.trace_session(tmp_path / "t.json", 0.3, blocksize=256)
        events = json.loads((tmp_path / "t.json").read_text())["traceEvents"]
        cycles = [e for e in events if e["name"] == "mix cycle"]
        assert done.path == tmp_path / "t.json" and done.cycles == len(cycles) > 10
        assert done.missed == 0

    def test_top_session(self):
        """top_session shows the screens of a demo engine and returns its last figures."""
        out = io.StringIO()
        last = profiling.top_session(0.3, 0.1, blocksize=256, out=out)
        assert out.getvalue().count("streamcore top") >= 3 and last.cycles > 0
